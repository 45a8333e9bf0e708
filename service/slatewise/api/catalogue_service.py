"""slatewise.v1.CatalogueService: upsert, delete, info."""

from __future__ import annotations

from pydantic import ValidationError

from slatewise.api import convert
from slatewise.catalogue.items import CatalogueItem
from slatewise.catalogue.store import CatalogueStore, UnknownItems
from slatewise.config import Settings
from slatewise.errors import InvalidRequest, abort_invalid
from slatewise.metrics import Metrics
from slatewise.proto import pb_grpc


class CatalogueService(pb_grpc.CatalogueServiceServicer):
    def __init__(self, settings: Settings, store: CatalogueStore, metrics: Metrics, source: str) -> None:
        self.settings = settings
        self.store = store
        self.metrics = metrics
        self.source = source

    def _published(self, snap):
        self.metrics.set_catalogue(len(snap), snap.version, self.source)
        return convert.catalogue_info(snap)

    async def UpsertItems(self, request, context):
        violations, items = [], []
        if not request.items:
            violations.append(("items", "must not be empty"))
        if len(request.items) > self.settings.max_upsert_items:
            violations.append(("items", f"has {len(request.items)} entries, the limit is {self.settings.max_upsert_items}"))
        seen = set()
        for i, it in enumerate(request.items[: self.settings.max_upsert_items]):
            try:
                items.append(CatalogueItem(id=it.id, title=it.title, category=it.category,
                                           attributes=dict(it.attributes)))
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"])
                    violations.append((f"items[{i}].{loc}", err["msg"]))
            if it.id in seen:
                violations.append((f"items[{i}].id", f"duplicate id {it.id[:64]!r} in this request"))
            seen.add(it.id)
        if violations:
            await abort_invalid(context, InvalidRequest(violations))
        return self._published(await self.store.upsert(items))

    async def DeleteItems(self, request, context):
        if not request.item_ids:
            await abort_invalid(context, InvalidRequest([("item_ids", "must not be empty")]))
        try:
            snap = await self.store.delete(request.item_ids)
        except UnknownItems as exc:
            await abort_invalid(context, InvalidRequest(
                [("item_ids", f"unknown id {i[:64]!r}") for i in exc.ids]))
        except ValueError as exc:
            await abort_invalid(context, InvalidRequest([("item_ids", str(exc))]))
        return self._published(snap)

    async def GetCatalogueInfo(self, request, context):
        return convert.catalogue_info(self.store.snapshot)
