"""A predict request's body in each form it may come: JSON (``{"inputs": [...],
"wait": ...}``), a raw ``image/png`` or ``image/jpeg`` body (one image; its
options in the query string), or ``multipart/form-data`` (each file one
image, in order; the options as form fields or in the query string). The
images become rows of ``{"b64": ...}``, as JSON sends them: the image kind
checks them all the same way, and the worker decodes them."""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator
from typing import Any

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from turnout.core.errors import InvalidInput, MalformedRequest
from turnout.router.validation import (
    IMAGE_TYPES,
    PREDICT_OPTIONS,
    Asked,
    parse_predict_body,
    predict_fields,
    predict_option,
    predict_options,
)

_MAX_FILES = 1024


async def predict_body(raw: bytes, content_type: str | None, query: str,
                       max_wait_s: float) -> tuple[Any, float, Asked]:
    """(inputs, wait, asked) from the body as it came."""
    kind = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if kind in IMAGE_TYPES:
        return predict_fields({"inputs": [{"b64": base64.b64encode(raw).decode()}],
                               **predict_options(query)}, max_wait_s)
    if kind == "multipart/form-data":
        return await _multipart(raw, content_type or "", query, max_wait_s)
    return parse_predict_body(raw, max_wait_s)


async def _multipart(raw: bytes, content_type: str, query: str,
                     max_wait_s: float) -> tuple[Any, float, Asked]:
    async def stream() -> AsyncGenerator[bytes, None]:
        yield raw

    try:
        form = await MultiPartParser(Headers({"content-type": content_type}), stream(),
                                     max_files=_MAX_FILES, max_fields=16).parse()
    except MultiPartException as exc:
        raise MalformedRequest(f"the multipart body does not parse: {exc.message}") from None
    options: dict[str, Any] = predict_options(query)
    inputs = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                inputs.append({"b64": base64.b64encode(data).decode()})
            elif name in PREDICT_OPTIONS:
                options[name] = predict_option(name, value)
            else:
                raise InvalidInput(f"form field {name!r}: a predict form takes image files and "
                                   "wait, priority, timeout_s")
    finally:
        await form.close()
    if not inputs:
        raise InvalidInput("the multipart form holds no file: send each image as a file")
    return predict_fields({"inputs": inputs, **options}, max_wait_s)

