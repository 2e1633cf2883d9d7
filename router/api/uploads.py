"""``POST /v1/models/{name}/versions`` (admin): a model uploaded over HTTP,
added by the same pipeline as ``turnout models add`` (turnout.core.adding),
whose loading runs in a throwaway process, never in the API's own.

Pickles are taken only where the server trusts them (``TURNOUT_TRUST_PICKLE``),
and skops types beyond skops' defaults only where ``TURNOUT_TRUSTED_TYPES``
names them: an upload never grants trust by itself.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path, PurePath
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from turnout.core.adding import AddOptions, add_model
from turnout.core.archives import is_archive, unpack
from turnout.core.errors import MalformedRequest, ModelNotAdded
from turnout.core.routes.shared import prepare, queue_publish
from turnout.router.api.deps import Services, ServicesDep

router = APIRouter(prefix="/v1/models", tags=["models"])
_FIELDS = ("file", "framework", "queue", "task", "sample", "version")


@router.post(
    "/{name}/versions",
    status_code=201,
    responses={403: {"description": "a pickle while the server does not trust pickles"},
               413: {"description": "over TURNOUT_MAX_UPLOAD_BYTES, or unpacks to too much"},
               422: {"description": "unknown format, a model that does not load, a sample "
                                    "that fails, an archive member outside its folder"}},
)
async def upload_version(name: str, request: Request, services: ServicesDep) -> JSONResponse:
    """Add an uploaded model (a file, or a `.tar.gz`/`.zip` of a folder) as the
    next version of `name`: multipart, `file` plus optional `framework`,
    `queue`, `task`, `sample` (JSON `{"inputs": [...]}`) and `version`."""
    settings = services.settings
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise MalformedRequest("expected multipart/form-data with the model in field 'file'")
    async with request.form(max_files=1, max_fields=len(_FIELDS)) as form:
        unknown = sorted(set(form) - set(_FIELDS))
        if unknown:
            raise ModelNotAdded(f"unknown field {unknown[0]!r}; expected {', '.join(_FIELDS)}")
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise ModelNotAdded("field 'file': expected the model file (or an archive of its "
                                "folder)")
        filename = PurePath(upload.filename.replace("\\", "/")).name
        if not filename or filename.startswith("."):
            raise ModelNotAdded(f"field 'file': the file name {upload.filename!r} is not usable")
        fields = {k: str(v) for k, v in form.items() if k != "file" and isinstance(v, str)}
        staging = settings.models_dir / f".upload-{uuid.uuid4().hex[:12]}"
        staging.mkdir(parents=True)
        try:
            saved = staging / filename
            with saved.open("wb") as out:
                while chunk := await upload.read(1 << 20):
                    out.write(chunk)
            body = await asyncio.to_thread(_add, services, name, staging, saved, fields)
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
    return JSONResponse(await _publish_if_new(services, body), status_code=201)


def _add(services: Services, name: str, staging: Path, saved: Path,
         fields: dict[str, str]) -> dict[str, Any]:
    settings = services.settings
    source = saved
    lowered = saved.name.lower()
    if lowered.endswith((".tar.gz", ".tgz", ".tar", ".zip")) and is_archive(saved):
        source = unpack(saved, staging / "unpacked", settings.max_unpacked_bytes)
    sample = None
    if fields.get("sample"):
        try:
            doc = json.loads(fields["sample"])
        except ValueError as exc:
            raise ModelNotAdded(f"field 'sample': not JSON ({exc})") from None
        sample = doc.get("inputs") if isinstance(doc, dict) else None
        if not isinstance(sample, list) or not sample:
            raise ModelNotAdded('field \'sample\': expected {"inputs": [row, ...]}')
    options = AddOptions(
        framework=fields.get("framework") or None, queue=fields.get("queue") or None,
        task=fields.get("task") or None, sample=sample, trust_pickle=settings.trust_pickle,
        trust_types=[t for t in settings.trusted_types.split(",") if t],
        version=fields.get("version") or None)
    added = add_model(settings.models_dir, services.table, name, source, options,
                      settings.add_timeout_s)
    return added.describe()


async def _publish_if_new(services: Services, body: dict[str, Any]) -> dict[str, Any]:
    """A new model's first version: the table with its route in force everywhere."""
    if not body["serving"]:
        return body
    settings = services.settings
    text, table = await asyncio.to_thread(prepare, settings.routes_file, settings.models_dir)
    pipe = services.client.pipeline(transaction=True)
    queue_publish(pipe, settings.routes_file, text)
    generation, _ = await pipe.execute()
    services.live.adopt(int(generation), table)
    return {**body, "generation": int(generation)}
