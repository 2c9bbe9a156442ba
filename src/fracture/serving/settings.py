"""The server's settings: the `serve` config (conf/serve.yaml) as typed values."""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(frozen=True)
class Limits:
    """Bad-upload limits.

    Attributes:
        max_upload_mb: request bodies over this are refused (413) while being read.
        max_pixels: decoded images over this many pixels are refused (422, a decompression
            bomb); None: the run's `data.max_image_pixels`.
        read_timeout_s: a body not received within this is refused (408), never a hang.
    """

    max_upload_mb: float = 20.0
    max_pixels: int | None = None
    read_timeout_s: float = 30.0

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


@dataclass(frozen=True)
class Batching:
    """Requests from several clients share one model call.

    Attributes:
        max_batch: at most this many images per model call.
        max_wait_ms: after the first request of a batch, wait at most this long for more.
        queue_size: requests waiting beyond this are refused at once (503), not queued.
        timeout_s: a request not answered within this gets 503.
    """

    max_batch: int = 8
    max_wait_ms: float = 5.0
    queue_size: int = 64
    timeout_s: float = 30.0


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    threshold: float | None = None
    box_confidence: float = 0.25  # detector runs: boxes at or above this score are returned
    gradcam: bool = True
    limits: Limits = field(default_factory=Limits)
    batching: Batching = field(default_factory=Batching)

    @classmethod
    def from_mapping(cls, cfg: dict) -> "ServeSettings":
        """From the `serve` config mapping; an unknown key is an error that names it."""
        cfg = dict(cfg)
        nested = {"limits": Limits, "batching": Batching}
        values = {}
        for name, kind in nested.items():
            section = dict(cfg.pop(name, None) or {})
            _check_keys(section, kind, name)
            values[name] = kind(**section)
        _check_keys(cfg, cls, None)
        return cls(**cfg, **values)


def _check_keys(section: dict, kind, prefix: str | None) -> None:
    known = {f.name for f in fields(kind)}
    unknown = sorted(set(section) - known)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ValueError(
            f"unknown serve setting {', '.join(where + k for k in unknown)} (valid: {', '.join(where + k for k in sorted(known))})"
        )
