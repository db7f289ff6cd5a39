"""``GET /v1/models`` and ``/v1/models/{id}``: the one model this server serves, listed while it
loads too (its context length once loaded)."""

from __future__ import annotations

import time

from runtime import protocol as p
from runtime.errors import RequestError


class ServingModels:
    def __init__(self, model_name: str):
        self.model_name = model_name
        self.created = int(time.time())
        self.max_model_len: int | None = None  # set once the model has loaded

    def list_models(self) -> p.ModelList:
        return p.ModelList(data=[self.card()])

    def show_model(self, model_id: str) -> p.ModelCard:
        if model_id != self.model_name:
            raise RequestError(f"The model `{model_id}` does not exist.", status=404, param="model", code="model_not_found")
        return self.card()

    def card(self) -> p.ModelCard:
        return p.ModelCard(id=self.model_name, created=self.created, max_model_len=self.max_model_len)
