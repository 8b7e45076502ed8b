"""Hugging Face Hub ids (``user/repo``, ``user/repo@revision``) as model sources, and publishing an export.

``download_export(ID)`` returns the local folder of an exported model on the Hub: huggingface_hub's
``snapshot_download`` into its cache (``$HF_HOME``), only the export's files. A cached snapshot works
offline. When the Hub cannot be reached (no network, ``HF_HUB_OFFLINE=1``, a firewall) and the model
is not cached, the answer is one ``CheckpointError`` line within a few seconds: the first request
is bounded by ``HUB_TIMEOUT`` (huggingface_hub itself would wait without limit, or retry for ~25 s).

``push_export(FOLDER, ID)`` uploads an exported folder as one commit (``sagan push``).
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from sagan.errors import CheckpointError, UsageError
from sagan.models.export import CONFIG_NAME, WEIGHTS_NAME

HUB_TIMEOUT = 5.0  # seconds the first request to the Hub may take before it counts as unreachable
EXPORT_FILES = [CONFIG_NAME, WEIGHTS_NAME, "README.md"]  # what an export holds on the Hub
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"({_NAME}/{_NAME})(?:@([A-Za-z0-9._/-]{{1,200}}))?")


def parse_hub_id(text: str | os.PathLike) -> tuple[str, str | None] | None:
    """``"user/repo"`` -> ``("user/repo", None)``, ``"user/repo@v1"`` -> ``("user/repo", "v1")``;
    None for anything that cannot be a Hub model id (a path like ``./x``, ``/x``, ``a/b/c``, ``~/x``)."""
    m = _HUB_ID.fullmatch(str(text))
    if m is None or ".." in m.group(1) or m.group(1).endswith(".git"):
        return None
    return m.group(1), m.group(2)


def is_hub_id(text: str | os.PathLike) -> bool:
    return parse_hub_id(text) is not None


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, read now rather than when huggingface_hub was imported."""
    from huggingface_hub import constants
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value is not None:
        return value.strip().upper() in ("1", "ON", "YES", "TRUE")
    return bool(constants.HF_HUB_OFFLINE)


def _first_line(e: BaseException) -> str:
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def _resolve_revision(repo_id: str, revision: str | None, timeout: float, token: Any) -> str:
    """The commit the Hub names for ``revision``, asked once with a bounded wait. Raises
    ``CheckpointError`` when the repository or revision does not exist (the Hub answered),
    ``ConnectionError`` when the Hub did not answer (unreachable, too slow, or a server error)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    answer: dict[str, Any] = {}

    def ask() -> None:
        try:
            answer["info"] = HfApi(token=token).model_info(repo_id, revision=revision, timeout=timeout)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            answer["error"] = e

    worker = threading.Thread(target=ask, name="sagan-hub-probe", daemon=True)  # a hung DNS lookup never blocks exit
    worker.start()
    worker.join(timeout + 1.0)
    if worker.is_alive():
        raise ConnectionError(f"no answer within {timeout:g} s")
    error = answer.get("error")
    if isinstance(error, GatedRepoError):
        raise CheckpointError(f"{repo_id} on the Hugging Face Hub is gated: accept its terms on the Hub and log in "
                              "(hf auth login, or set HF_TOKEN)")
    if isinstance(error, RevisionNotFoundError):
        raise CheckpointError(f"{repo_id} on the Hugging Face Hub has no revision {revision!r}")
    if isinstance(error, RepositoryNotFoundError):
        raise CheckpointError(f"{repo_id}: no such model repository on the Hugging Face Hub (or it is private: "
                              "log in with hf auth login, or set HF_TOKEN), and no such local folder")
    if error is not None:
        raise ConnectionError(_first_line(error))
    sha = getattr(answer["info"], "sha", None)
    if not sha:
        raise ConnectionError("the Hub's answer names no commit")
    return str(sha)


def download_export(source: str, timeout: float = HUB_TIMEOUT, token: Any = None, cache_dir: str | None = None,
                    force_download: bool = False, local_files_only: bool = False) -> Path:
    """The local folder (in huggingface_hub's cache) of the exported model ``source`` (``user/repo`` or
    ``user/repo@revision``), downloaded when needed; one-line ``CheckpointError`` otherwise."""
    parsed = parse_hub_id(source)
    if parsed is None:
        raise CheckpointError(f"{source} is not a Hugging Face Hub id (user/repo or user/repo@revision)")
    repo_id, revision = parsed
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    commit, why_offline = None, None
    if local_files_only or hub_offline():
        why_offline = "HF_HUB_OFFLINE is set" if not local_files_only else "local_files_only"
    else:
        try:
            commit = _resolve_revision(repo_id, revision, timeout, token)
        except ConnectionError as e:
            why_offline = f"the Hugging Face Hub cannot be reached ({e})"
    try:
        folder = snapshot_download(repo_id, revision=commit or revision, allow_patterns=EXPORT_FILES, token=token,
                                   cache_dir=cache_dir, force_download=force_download and commit is not None,
                                   local_files_only=commit is None)
    except LocalEntryNotFoundError:
        from huggingface_hub import constants
        where = cache_dir or constants.HF_HUB_CACHE
        raise CheckpointError(f"{source} is not a local folder, and not in the Hugging Face Hub cache {where}: "
                              f"{why_offline or 'the download failed'}; connect once to download it, or give the "
                              "path of an exported folder") from None
    except Exception as e:  # noqa: BLE001 - a broken download, a full disk, ...: one line
        raise CheckpointError(f"{source}: downloading it from the Hugging Face Hub failed ({_first_line(e)})") from None
    missing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (Path(folder) / n).is_file()]
    if missing:
        raise CheckpointError(f"{source} on the Hugging Face Hub is not a sagan export (no {' or '.join(missing)}); "
                              "publish one with 'sagan push RUN_OR_EXPORT REPO_ID'")
    return Path(folder)


def push_export(folder: str | os.PathLike, repo_id: str, private: bool | None = None, message: str | None = None,
                branch: str | None = None, token: Any = None) -> str:
    """Upload the exported ``folder`` to the Hub model repository ``repo_id`` (made when missing) as
    one commit; returns the commit's URL. One-line errors (``UsageError``) for what the user can fix."""
    if parse_hub_id(repo_id) is None or parse_hub_id(repo_id)[1] is not None:  # type: ignore[index]
        raise UsageError(f"{repo_id} is not a Hugging Face Hub repository id; give user/name or org/name")
    if hub_offline():
        raise UsageError("HF_HUB_OFFLINE is set: publishing needs the Hugging Face Hub; unset it to push")
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(repo_id=getattr(repo, "repo_id", repo_id), repo_type="model",
                                   folder_path=str(folder), commit_message=message or "Upload SAGAN generator (sagan push)",
                                   revision=branch)
    except LocalTokenNotFoundError:
        raise UsageError("pushing to the Hugging Face Hub needs a token: log in with 'hf auth login' or set HF_TOKEN"
                         ) from None
    except HfHubHTTPError as e:
        raise UsageError(f"the Hugging Face Hub refused the push to {repo_id}: {_first_line(e)}") from None
    except (OSError, ConnectionError) as e:
        raise UsageError(f"the Hugging Face Hub cannot be reached to push {repo_id}: {_first_line(e)}") from None
    return str(getattr(commit, "commit_url", None) or commit)
