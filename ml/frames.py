"""A ``columns`` input's rows (checked by the router) as the pandas DataFrame
a scikit-learn pipeline was fitted on: the columns in the schema's order,
each with its dtype, nulls as NaN (what SimpleImputer looks for)."""

from __future__ import annotations

from typing import Any

import numpy as np

_DTYPES = {"number": "float64", "integer": "int64", "string": "object", "boolean": "bool"}


def to_frame(rows: list[dict[str, Any]], schema: dict[str, Any]) -> Any:
    import pandas as pd

    data: dict[str, Any] = {}
    for column in schema["columns"]:
        name, kind = column["name"], column["type"]
        values = [row.get(name) for row in rows]
        has_null = any(v is None for v in values)
        if kind == "string":
            data[name] = pd.Series([np.nan if v is None else v for v in values], dtype=object)
        elif has_null:
            # A null integer or boolean column is float with NaN, as pandas
            # reads a CSV with gaps, so that an imputer can fill it.
            data[name] = pd.Series([np.nan if v is None else float(v) for v in values],
                                   dtype="float64")
        else:
            data[name] = pd.Series(values, dtype=_DTYPES[kind])
    return pd.DataFrame(data)


def as_matrix(rows: list[Any], schema: dict[str, Any], dtype: Any = np.float64) -> Any:
    """Rows as the model takes them: a DataFrame for named columns, else an array."""
    if schema.get("kind") == "columns":
        return to_frame(rows, schema)
    return np.asarray(rows, dtype=dtype)
