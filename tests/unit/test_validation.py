from __future__ import annotations

from typing import Any

import pytest
import yaml

from turnout.core.errors import InvalidInput
from turnout.core.routes import parse_routes
from turnout.router.validation import Asked, parse_predict_body, validate_inputs

TABLE = parse_routes(
    yaml.safe_load(
        """
models:
  iris: {framework: sklearn, version: 1, queue: cpu, input: {width: 4}, max_rows: 3}
  words: {framework: "pkg.mod:Adapter", version: 1, queue: gpu, input: {kind: text, max_length: 10}}
"""
    )
)


def test_good_rows_come_back_as_floats() -> None:
    rows = validate_inputs(TABLE.routes["iris"], [[1, 2.5, 3, 4], [0, 0, 0, 0]])
    assert rows == [[1.0, 2.5, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]]
    assert all(isinstance(v, float) for row in rows for v in row)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([[1, 2, 3, 4], [1, 2, 3]], "inputs[1]: expected 4 numbers for model 'iris', got 3"),
        ([[1, 2, 3, 4, 5]], "inputs[0]: expected 4 numbers for model 'iris', got 5"),
        ([[1, 2, None, 4]], "inputs[0][2]: expected a number, got None"),
        ([[1, 2, "3", 4]], "inputs[0][2]: expected a number, got '3'"),
        ([[1, 2, False, 4]], "inputs[0][2]: expected a number, got False"),
        ([[1, 2, float("nan"), 4]], "inputs[0][2]: expected a finite number, got nan"),
        ([[float("-inf"), 2, 3, 4]], "inputs[0][0]: expected a finite number, got -inf"),
        ([[10**400, 2, 3, 4]], "inputs[0][0]: the number is too large for a float"),
        ([{"a": 1}], "inputs[0]: expected a list of 4 numbers, got {'a': 1}"),
        ([], "inputs: no rows given"),
        ([[1, 2, 3, 4]] * 4, "inputs: 4 rows, but model 'iris' takes at most 3 per request"),
        ({"rows": []}, "inputs: expected a list of rows, got dict"),
        ([["x" * 100, 2, 3, 4]], "got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…"),
    ],
)
def test_bad_tabular_inputs(inputs: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_inputs(TABLE.routes["iris"], inputs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (["ok", 3], "inputs[1]: expected a string, got 3"),
        (["ok", "   "], "inputs[1]: the string is empty"),
        (["a" * 11], "inputs[0]: 11 characters, but model 'words' takes at most 10"),
    ],
)
def test_bad_text_inputs(inputs: Any, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        validate_inputs(TABLE.routes["words"], inputs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b'{"inputs": [[1,2,3,4]]}', ([[1, 2, 3, 4]], 0.0, Asked("normal"))),
        (b'{"inputs": [[1,2,3,4]], "wait": 2.5}', ([[1, 2, 3, 4]], 2.5, Asked("normal"))),
        (b'{"inputs": [], "wait": null, "priority": "high"}', ([], 0.0, Asked("high"))),
        (b'{"inputs": [], "priority": null, "timeout_s": 0.5}', ([], 0.0, Asked("normal", 0.5))),
    ],
)
def test_predict_bodies(raw: bytes, expected: tuple[Any, float, Asked]) -> None:
    assert parse_predict_body(raw, max_wait_s=30) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "body: not valid JSON"),
        (b"[1]", "body: expected a JSON object"),
        (b'{"input": []}', "body: unknown key 'input'"),
        (b'{"wait": 1}', "body: 'inputs' is missing"),
        (b'{"inputs": [], "wait": true}', "wait: expected a number of seconds, got True"),
        (b'{"inputs": [], "wait": -0.5}', "wait: expected a number of seconds from 0 to 30"),
        (b'{"inputs": [], "wait": NaN}', "wait: expected a number of seconds from 0 to 30, got nan"),
        (b'{"inputs": [], "wait": 31}', "wait: at most 30 seconds, got 31"),
        (b'{"inputs": [], "priority": "urgent"}',
         "priority: expected one of 'high', 'normal', 'low', got 'urgent'"),
        (b'{"inputs": [], "priority": 1}', "priority: expected one of"),
        (b'{"inputs": [], "timeout_s": 0}', "timeout_s: expected a number of seconds above 0"),
        (b'{"inputs": [], "timeout_s": true}', "timeout_s: expected a number of seconds"),
        (b'{"inputs": [], "timeout_s": "1s"}', "got '1s'"),
    ],
)
def test_bad_predict_bodies(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_predict_body(raw, max_wait_s=30)
    assert message in str(err.value)
