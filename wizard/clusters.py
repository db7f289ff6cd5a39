"""Cluster profiles: GPU resource name, tolerations, storage classes (one for volumes several nodes
mount at once), GPU product per cluster, and the Kubernetes version where it is known."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError
from .loader import did_you_mean, read_yaml
from .paths import USER_CLUSTERS

BUILTIN = Path(__file__).with_name("clusters.yaml")
USER_FILE = USER_CLUSTERS


class Toleration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class ClusterProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    gpu_resource: str = "nvidia.com/gpu"
    gpu_tolerations: list[Toleration] = Field(default_factory=list)
    gpu_product: str | None = None
    storage_class: str | None = None
    # A StorageClass whose volumes several nodes mount at once (ReadWriteMany: CephFS, NFS...);
    # empty where none is known. Volumes that several pods use at once are created in it.
    rwx_storage_class: str | None = None
    # The cluster's Kubernetes version, "major.minor" (OpenShift 4.16 is "1.29"); empty where not
    # known. A sweep retries each trial on its own (backoffLimitPerIndex) only where it is 1.29 or
    # later; elsewhere, and when unknown, its trials share one retry budget (backoffLimit).
    kubernetes_version: str | None = None

    @field_validator("kubernetes_version", mode="before")
    @classmethod
    def _version(cls, v: object) -> object:
        if v is None:
            return v
        if not isinstance(v, str) or not re.fullmatch(r"1\.\d+(\.\d+)?", v):
            raise ValueError(f"{v!r} is not a Kubernetes version; write it quoted as major.minor, e.g. \"1.29\"")
        return v

    def kubernetes_at_least(self, minor: int) -> bool:
        """The profile states a Kubernetes 1.<minor> or later (False when it states none)."""
        return self.kubernetes_version is not None and int(self.kubernetes_version.split(".")[1]) >= minor


@lru_cache(maxsize=None)
def _load(paths: tuple[Path, ...]) -> dict[str, ClusterProfile]:
    profiles: dict[str, ClusterProfile] = {}
    for path in paths:
        if not path.is_file():
            continue
        for name, body in read_yaml(path, label=path.name).items():
            try:
                profiles[str(name)] = ClusterProfile.model_validate(body or {})
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                where = ".".join([str(name), *map(str, err["loc"])])
                raise ConfigError(path.name, [(where, str(err["msg"]).lower())]) from None
    return profiles


def profiles() -> dict[str, ClusterProfile]:
    return _load((BUILTIN, USER_FILE))


def profile(name: str) -> ClusterProfile:
    known = profiles()
    if name not in known:
        raise ConfigError(
            "config.yaml",
            [("deployment.cluster", f"{name!r} is not a known cluster profile{did_you_mean(name, list(known))}; "
              f"known: {', '.join(sorted(known))} (add yours to clusters.yaml)")],
        )
    return known[name]
