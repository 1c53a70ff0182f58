"""``from_pretrained`` arguments shared by the MLLM adapters.

One place decides, for every Hugging Face load medprobe does:

* where the weights come from (``source`` or the card's hub id) and the honest ``weights`` label
  (``hub:<id>@<revision or main>`` or ``local:<absolute dir>``);
* the revision (argument, else the card's pinned ``revision``);
* the torch dtype (``auto`` / ``bf16`` / ``fp16`` / ``fp32`` via :mod:`medprobe.runtime`);
* ``local_files_only`` (true when ``HF_HUB_OFFLINE`` is set truthy, or when the hub does not
  answer a quick connection probe, so an offline run never tries the network);
* ``trust_remote_code`` (only ever true when the user asked for it).

Before anything is downloaded, a hub checkpoint is looked up in the Hugging Face cache
(:func:`in_hub_cache`). Not cached and offline (``HF_HUB_OFFLINE``) or the hub unreachable
(:func:`hub_unreachable`, a TCP probe bounded to a few seconds): one :class:`AdapterError` at once
(:func:`offline_error`) naming ``HF_HUB_OFFLINE``, ``--source DIR`` and the cache folder searched,
instead of transformers' generic connection error after half a minute of retries. A ``source``
that looks like a path (``/``, ``./``, ``../``, ``~``) but is no directory is refused by
:func:`missing_directory_error`. Every family that downloads from the hub (the MLLM families,
``hf_clip``, ``timm``, ``open_clip``) goes through these functions.

:func:`read_config_dict` reads a checkpoint's raw ``config.json`` without instantiating a config
class, so adapters can check ``model_type`` before ``from_pretrained`` loads anything.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from ...adapter import AdapterError
from ...cards import ModelCard
from ...registry import NotFoundError, read_json_object
from ...runtime import resolve_dtype, torch_dtype

_TRUTHY = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a truthy value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


#: seconds the hub connection probe may take (DNS included)
PROBE_TIMEOUT_S = 3.0
_PROBES: dict[tuple[str, int], str | None] = {}


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder searched for downloaded checkpoints (``HF_HUB_CACHE`` /
    ``HF_HOME``, default ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_endpoint() -> str:
    """The hub address downloads go to (``HF_ENDPOINT``, default ``https://huggingface.co``)."""
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


def _probe_address() -> tuple[str, int]:
    """(host, port) a download connects to first: the HTTPS proxy when one is set, else the hub."""
    from urllib.parse import urlsplit

    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)), "")
    url = urlsplit(proxy if "://" in proxy else (f"http://{proxy}" if proxy else hub_endpoint()))
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def hub_unreachable(timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """``None`` when a TCP connection to the hub (or the HTTPS proxy) opens within ``timeout``
    seconds, else why not (``"huggingface.co:443: Name or service not known"``). The DNS lookup
    runs in a daemon thread so the bound holds; the answer is remembered for the process."""
    address = _probe_address()
    if address in _PROBES:
        return _PROBES[address]
    result: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            result.append(None)
        except OSError as exc:
            result.append(f"{address[0]}:{address[1]}: {exc.strerror or exc}")

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    reason = result[0] if result else f"{address[0]}:{address[1]}: no answer within {timeout:g} s"
    _PROBES[address] = reason
    return reason


def in_hub_cache(repo_id: str, filenames: tuple[str, ...] = ("config.json",), revision: str | None = None) -> bool:
    """Whether any of ``filenames`` of ``repo_id`` at ``revision`` is in the hub cache (no network)."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        try:
            if isinstance(try_to_load_from_cache(repo_id, name, revision=revision), str):
                return True
        except Exception:  # an id the hub would reject is simply not cached
            continue
    return False


def offline_error(what: str, repo_id: str, revision: str | None, reason: str, fix: str = "pass --source DIR (a local checkpoint directory)") -> AdapterError:
    """The one message for hub weights that cannot be had: names the checkpoint, why (offline or
    unreachable), the cache folder searched, ``HF_HUB_OFFLINE`` and the way out (``fix``)."""
    return AdapterError(
        f"{what}: {repo_id}@{revision or 'main'} is not in the Hugging Face cache (searched {hub_cache_dir()}) and "
        f"{reason}; {fix}, or download it where the hub is reachable (`hf download {repo_id}`) into that cache "
        "(HF_HUB_CACHE / HF_HOME); with the files cached, HF_HUB_OFFLINE=1 loads them without touching the network"
    )


def hub_access(what: str, repo_id: str, revision: str | None, filenames: tuple[str, ...] = ("config.json",),
               fix: str = "pass --source DIR (a local checkpoint directory)") -> bool:
    """Decide, before any download, how ``repo_id`` can be loaded; returns ``local_files_only``.

    Cached: ``True`` when ``HF_HUB_OFFLINE`` is set or the hub is unreachable (load from the cache
    without retries), else ``False``. Not cached: ``False`` when the hub answers the probe, else
    :func:`offline_error`.
    """
    cached = in_hub_cache(repo_id, filenames, revision)
    if hub_offline():
        if cached:
            return True
        raise offline_error(what, repo_id, revision, f"HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE')} forbids downloading", fix)
    unreachable = hub_unreachable()
    if unreachable is None:
        return False
    if cached:
        return True
    raise offline_error(what, repo_id, revision, f"the hub is unreachable ({unreachable}; set HF_HUB_OFFLINE=1 to skip this probe)", fix)


def looks_like_path(location: str) -> bool:
    """True for what can only be a filesystem path (absolute, ``./``, ``../``, ``~``, or more
    than one ``/``), never a hub id ``ORG/NAME``."""
    text = str(location)
    return text.startswith(("/", "./", "../", "~", "\\")) or text.count("/") > 1 or os.sep != "/" and os.sep in text


def missing_directory_error(location: str, what: str = "source") -> AdapterError:
    """``--source /missing``: the directory does not exist (and is no hub id)."""
    return AdapterError(
        f"{what} '{location}': the directory does not exist ({Path(location).expanduser().absolute()}); pass an existing "
        "checkpoint directory (config.json + weights) or a hub id ORG/NAME"
    )


@dataclass(frozen=True)
class PretrainedSource:
    """Where and how one checkpoint is loaded.

    ``location`` is what ``from_pretrained`` receives (hub id or local directory), ``kwargs`` the
    keyword arguments shared by the model and the processor loads, ``dtype_name`` the resolved
    torch dtype name (``"bfloat16"`` ...), ``weights`` the label stored in ``LoadedModel.weights``.
    """

    location: str
    is_local: bool
    revision: str | None
    dtype_name: str
    weights: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def model_kwargs(self, device_map: str | None = None, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for the model's ``from_pretrained`` (adds ``dtype`` and ``device_map``)."""
        out = dict(self.kwargs, dtype=torch_dtype(self.dtype_name), **extra)
        if device_map is not None:
            out["device_map"] = device_map
        return out

    def processor_kwargs(self, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for ``AutoProcessor.from_pretrained``."""
        return dict(self.kwargs, **extra)


def pretrained_source(
    card: ModelCard,
    source: str | None,
    *,
    revision: str | None,
    dtype: str,
    device: str,
    trust_remote_code: bool = False,
    fix: str = "pass --source DIR (a local checkpoint directory)",
) -> PretrainedSource:
    """Resolve ``source`` (default: the card's hub id) into a :class:`PretrainedSource`.

    A card made for a local checkpoint directory (``medprobe --model DIR``) carries it in
    ``settings.checkpoint_dir``, used when no ``source`` is given. A hub location is checked with
    :func:`hub_access` first (cache, ``HF_HUB_OFFLINE``, a quick probe). Raises
    :class:`AdapterError` when there is no location, a path-like source does not exist, or hub
    weights cannot be had offline (``fix``: the family's way out, in that message).
    """
    location = source or card.setting("checkpoint_dir") or card.hub_id
    if not location:
        raise AdapterError(f"card '{card.id}' has no hub_id; pass a local checkpoint directory as the source")
    location = str(location)
    is_local = Path(location).expanduser().is_dir()
    if is_local:
        location = str(Path(location).expanduser().resolve())
        rev = None
        weights = f"local:{location}"
        local_only = True
    else:
        if looks_like_path(location):
            raise missing_directory_error(location)
        rev = revision or card.revision
        weights = f"hub:{location}@{rev or 'main'}"
        local_only = hub_access(f"card '{card.id}'", location, rev, fix=fix)
    kwargs: dict[str, Any] = {"local_files_only": local_only}
    if rev is not None:
        kwargs["revision"] = rev
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    return PretrainedSource(
        location=location,
        is_local=is_local,
        revision=rev,
        dtype_name=resolve_dtype(dtype, device),
        weights=weights,
        kwargs=kwargs,
    )


def read_config_dict(src: PretrainedSource) -> dict[str, Any]:
    """The raw ``config.json`` of ``src`` as a dict (local file, or the hub file through the
    Hugging Face cache). Errors name the file or repository."""
    if src.is_local:
        path = Path(src.location) / "config.json"
        if not path.is_file():
            raise AdapterError(f"{path}: no config.json in the checkpoint directory")
    else:
        from transformers.utils import cached_file

        try:
            resolved = cached_file(
                src.location,
                "config.json",
                revision=src.revision,
                local_files_only=src.kwargs.get("local_files_only", False),
            )
        except Exception as exc:
            raise AdapterError(f"cannot read config.json of '{src.location}' ({src.weights}): {exc}") from exc
        if resolved is None:
            raise AdapterError(f"'{src.location}' ({src.weights}) has no config.json")
        path = Path(resolved)
    return read_json_object(path, "config.json", AdapterError)


def model_device(model: Any) -> str:
    """The device of the model's first parameter (``"cpu"``, ``"cuda:0"`` ...)."""
    for p in model.parameters():
        return str(p.device)
    return "cpu"


# -- model names: hub ids and checkpoint directories -------------------------------------------
#: a hub repository id ``ORG/NAME``
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def checkpoint_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a local checkpoint directory as a dict; :class:`NotFoundError`
    naming the file when it is missing or unreadable."""
    path = Path(directory).expanduser() / "config.json"
    if not path.is_file():
        raise NotFoundError(
            f"{path.parent}: no config.json, so this is not a Hugging Face checkpoint directory (a saved model holds "
            "config.json and its weights); timm / open_clip weight files go to --weights PATH"
        )
    return read_json_object(path, "config.json", NotFoundError)


def architectures_of(config: Mapping[str, Any]) -> list[str]:
    """``config.json`` ``architectures`` (a list of class names; empty when absent)."""
    archs = config.get("architectures") or []
    return [str(a) for a in archs] if isinstance(archs, (list, tuple)) else [str(archs)]


def adhoc_card(
    family: str,
    name: str,
    *,
    kind: str,
    architectures: Sequence[str],
    matches: Callable[[Mapping[str, Any]], bool],
    settings: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None,
    loader: str = "stock",
) -> ModelCard:
    """The ad-hoc card for ``FAMILY:NAME`` of a Hugging Face family, ``NAME`` being a local
    checkpoint directory or a hub id ``ORG/NAME``.

    A directory: its ``config.json`` must ``matches`` the family; the architecture is the first
    of its ``architectures`` this family loads (else ``architectures[0]``); the card keeps the
    absolute directory in ``settings.checkpoint_dir`` and its id is ``FAMILY:/abs/dir`` (so the
    id names the card again). A hub id: ``hub_id`` = the id, architecture ``architectures[0]``
    (the checkpoint's ``config.json`` ``model_type`` is checked when it loads). ``settings``
    adds family settings from ``(architecture, config)``. :class:`NotFoundError` otherwise.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        path = path.resolve()
        config = checkpoint_config(path)
        if not matches(config):
            raise NotFoundError(
                f"{family}:{name}: {path / 'config.json'} describes model_type '{config.get('model_type')}' "
                f"(architectures {architectures_of(config)}), which family '{family}' does not load; "
                "pass the directory alone (--model DIR) and its config.json picks the family"
            )
        arch = next((a for a in architectures_of(config) if a in architectures), architectures[0])
        card_id = f"{family}:{path}"
        if any(ch.isspace() for ch in card_id):
            raise NotFoundError(f"{family}:{name}: a checkpoint directory path with spaces cannot name a model; rename or link it")
        extra = dict(settings(arch, config)) if settings else {}
        return ModelCard(
            id=card_id, kind=kind, family=family, title=path.name, architecture=arch, loader=loader,
            settings={**extra, "checkpoint_dir": str(path)},
            notes=f"ad-hoc card made from {path / 'config.json'} (no zoo card matched)",
        )
    if looks_like_path(name):
        raise NotFoundError(
            f"{family}:{name}: the directory does not exist ({path.absolute()}); pass an existing checkpoint directory "
            "or a hub id ORG/NAME"
        )
    if HUB_ID.fullmatch(name):
        extra = dict(settings(architectures[0], {})) if settings else {}
        return ModelCard(
            id=f"{family}:{name}", kind=kind, family=family, title=name, hub_id=name, architecture=architectures[0],
            loader=loader, settings=extra,
            notes="ad-hoc card for a hub id (no zoo card has it); the checkpoint's config.json is checked when it loads",
        )
    raise NotFoundError(f"{family}:{name}: expected a hub id ORG/NAME or a local checkpoint directory after '{family}:'")
