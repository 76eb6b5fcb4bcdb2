"""Preset weights from where users keep them: the local Hugging Face cache (read without any network, so it
works with HF_HUB_OFFLINE=1), or the Hub itself, but only when the user asks with `--weights hf-hub:ORG/NAME`.

The cache is huggingface_hub's own layout (`models--ORG--NAME/{refs/main, snapshots/<commit>/FILE, blobs/}`),
found as huggingface_hub finds it: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub. The
variables are read on every call (huggingface_hub reads them once, at import).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

HUB_URL = "https://huggingface.co"
HF_HUB_PREFIX = "hf-hub:"
_TRUE = ("1", "on", "yes", "true")


def cache_dir() -> str:
    """The Hugging Face hub cache folder the environment names now."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return os.path.expandvars(os.path.expanduser(explicit))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "huggingface")
    return os.path.join(os.path.expandvars(os.path.expanduser(home)), "hub")


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: the Hub is never contacted."""
    return any((os.environ.get(k) or "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def cached_file(repo: str, files: tuple[str, ...], cache: str | None = None) -> str | None:
    """The first of `files` (in order of preference) in the cache's copy of `repo`: the snapshot `refs/main`
    points at first (huggingface_hub.try_to_load_from_cache), else the newest snapshot holding it (a revision
    downloaded by commit). None when the repo or the files are not cached. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    cache = cache or cache_dir()
    for name in files:
        hit = try_to_load_from_cache(repo, name, cache_dir=cache)
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    snapshots = Path(cache) / ("models--" + repo.replace("/", "--")) / "snapshots"
    if not snapshots.is_dir():
        return None
    for name in files:
        found = [s / name for s in snapshots.iterdir() if (s / name).is_file()]
        if found:
            return str(max(found, key=lambda p: p.parent.stat().st_mtime))
    return None


def how_to_get(repo: str, files: tuple[str, ...], gated: bool) -> str:
    """The ways to obtain a model's weights, as one sentence."""
    licence = f"accept the licence at {HUB_URL}/{repo} and log in (`huggingface-cli login` or `hf auth login`, " \
              "or set HF_TOKEN), then " if gated else ""
    return (f"{licence}download them once with --weights {HF_HUB_PREFIX}{repo} (or `hf download {repo} {files[0]}`) "
            f"into the Hugging Face cache ({cache_dir()}; HF_HOME / HF_HUB_CACHE move it), or pass --weights FILE "
            f"or DIR (a local {' / '.join(files)} or a downloaded snapshot folder); --weights random runs the "
            "untrained network")


def download(repo: str, files: tuple[str, ...], name: str, gated: bool) -> str:
    """Fetch the first of `files` that `repo` has into the cache (hf_hub_download: that file only, from
    HF_ENDPOINT when set); every failure is one ConfigError saying how to get the weights instead."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    source = f"{HF_HUB_PREFIX}{repo}"
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ConfigError(source, f"expected {HF_HUB_PREFIX}ORG/NAME (a Hugging Face model repo)")
    endpoint = (os.environ.get("HF_ENDPOINT") or HUB_URL).rstrip("/")
    for file in files:
        try:
            return hf_hub_download(repo, file, cache_dir=cache_dir(), endpoint=endpoint,
                                   local_files_only=offline())
        except RemoteEntryNotFoundError:
            continue  # the repo has another of the preset's file names
        except GatedRepoError:
            why = f"{repo} is gated and this account has no access to it"
        except (RepositoryNotFoundError, HfHubHTTPError) as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            why = (f"{endpoint} refused access to {repo} (HTTP {status}: gated or private, and no accepted licence "
                   "or valid token)" if status in (401, 403) else
                   f"{endpoint} has no model {repo} (or it is private)" if isinstance(exc, RepositoryNotFoundError)
                   else f"{endpoint} answered HTTP {status} for {repo}")
        except LocalEntryNotFoundError:
            from huggingface_hub import constants

            why = ("HF_HUB_OFFLINE is set and the file is not in the cache" if offline() or constants.HF_HUB_OFFLINE else
                   f"{endpoint} cannot be reached and the file is not in the cache")
        except OSError as exc:
            why = f"download failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
        raise ConfigError(source, f"cannot download the weights of {name}: {why}. To get them, "
                                  + how_to_get(repo, files, gated=True))
    raise ConfigError(source, f"{repo} has none of the weight files {name} loads ({', '.join(files)}); pass "
                              "--weights FILE with the checkpoint instead")
