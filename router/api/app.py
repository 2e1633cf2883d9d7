"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import ORJSONResponse
from fastapi_offline import FastAPIOffline

from turnout.core.broker import connect_async
from turnout.core.celery_app import make_celery
from turnout.core.delivery import ReaperThread
from turnout.core.routes import RouteTable
from turnout.core.settings import Settings
from turnout.router.access import DOCS_ASSETS, KeyRing, open_when_empty
from turnout.router.api import admin, api_keys, batches, models, ops, tasks, training, uploads, v2
from turnout.router.api.deps import Services
from turnout.router.api.errors import install_error_handlers
from turnout.router.api.fastpath import PredictFastPath
from turnout.router.api.guard import Access
from turnout.router.api.limits import BodyLimit
from turnout.router.dispatch import Dispatcher
from turnout.router.jobs import BatchJobs
from turnout.router.lifecycle import Lifecycle
from turnout.router.live import LiveView
from turnout.router.metrics import Metrics
from turnout.router.results import ResultWatcher
from turnout.router.training import Training


def create_asgi(settings: Settings, table: RouteTable) -> Access:
    """The API as served: the access check, the body limit, then the predict
    fast path, then FastAPI."""
    app = create_app(settings, table)
    limited = BodyLimit(
        PredictFastPath(app),
        max_bytes=settings.max_body_bytes,
        batch_bytes=settings.max_batch_body_bytes,
        upload_bytes=settings.max_upload_bytes,
        count=lambda status, error: app.state.services.metrics.error(status, error),
    )
    return Access(limited, lambda: app.state.services, settings.metrics_auth)


def create_app(settings: Settings, table: RouteTable) -> FastAPI:
    """Build the API. Connections open in the lifespan, not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = settings.redis()
        client = connect_async(redis, socket_timeout=10, socket_connect_timeout=5,
                               health_check_interval=30)
        celery = make_celery(settings, table, redis)
        watcher = ResultWatcher(redis, client)
        live = LiveView(client, table)
        await watcher.start()
        # Every API process also gives a dead worker's jobs back (any number of
        # reapers may run at once; each give-back is one transaction).
        reaper = ReaperThread(redis, settings.dead_after_s, settings.reap_interval_s, "api")
        reaper.start()
        metrics = Metrics()
        dispatcher = Dispatcher(settings, celery, client, watcher, live, metrics)
        lifecycle = Lifecycle(settings, client, live)
        # Rollouts that outlast the call that started them finish here.
        live.after_refresh = lifecycle.tick
        keyring = KeyRing(client, open_when_empty(settings))
        live.on_keys = keyring.update
        services = Services(
            settings=settings,
            client=client,
            live=live,
            dispatcher=dispatcher,
            jobs=BatchJobs(settings, client, live, dispatcher.messages,
                           dispatcher.claims, dispatcher.track, dispatcher.schemas),
            metrics=metrics,
            lifecycle=lifecycle,
            training=Training(settings, celery, client, live),
            keyring=keyring,
        )
        metrics.watch_cluster(live, dispatcher.batcher, lambda: live.table)
        app.state.services = services
        # Started once every hook is in place: its first refresh reads the keys.
        await live.start()
        try:
            yield
        finally:
            reaper.stop()
            await app.state.services.dispatcher.close()
            await live.stop()
            await watcher.stop()
            await client.aclose()
            celery.close()

    # Swagger UI and ReDoc from files the package carries (fastapi-offline),
    # not a public CDN: /docs works on a machine with no network.
    app = FastAPIOffline(
        static_url=DOCS_ASSETS,
        title="Turnout",
        # Task views can carry hundreds of kB of floats (embeddings, batch jobs).
        default_response_class=ORJSONResponse,
        version="1",
        summary="A GPU-aware, multi-queue inference router",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(models.router)
    app.include_router(uploads.router)
    app.include_router(batches.router)
    app.include_router(tasks.router)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(api_keys.router)
    app.include_router(training.router)
    app.include_router(v2.router)
    return app
