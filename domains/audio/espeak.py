"""espeak-ng speech synthesis through ctypes, offline, with the ``espeakng-loader`` wheel.

The wheel bundles ``libespeak-ng.so`` and its ``espeak-ng-data`` folder, so nothing is
downloaded and no system package is needed. The library is driven through its C API
(``speak_lib.h``): ``espeak_Initialize`` in synchronous mode (the synthesis callback receives
16-bit samples at 22050 Hz), ``espeak_SetVoiceByName("<language>+<variant>")``,
``espeak_SetParameter`` for rate, pitch and pitch range, ``espeak_Synth``.

Determinism. espeak-ng keeps static state between utterances (flutter phase, a random
generator for the noise sources) that even re-initialisation does not fully reset, so the
same call gives slightly different samples depending on what was synthesised before in the
process. Measured here: re-initialising and seeding (``espeak_ng_SetRandSeed``) before every
clip makes a *fixed sequence of clips in a fresh process* bit-identical from run to run.
:func:`synthesize` therefore runs every group of jobs in its own fresh process (this file
run as a script; it imports only numpy and ctypes), which makes the output a pure function
of the job list, whatever the number of parallel workers.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ESPEAK_RATE = 22050
AUDIO_OUTPUT_SYNCHRONOUS = 2
POS_CHARACTER = 1
# espeak_PARAMETER enum of speak_lib.h
RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4
#: English languages of espeak-ng used as accents (names accepted by SetVoiceByName)
ACCENTS = ("en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-us-nyc")


def _loader():
    try:
        import espeakng_loader
    except ImportError:
        raise ImportError("the spoken-digits set needs espeak-ng: pip install espeakng-loader "
                          "(or pip install -e '.[audio]')") from None
    return espeakng_loader


def variants() -> list[str]:
    """Names of the voice variants bundled with espeak-ng (m1..m8, f1..f5, klatt, ...)."""
    folder = Path(_loader().get_data_path()) / "voices" / "!v"
    return sorted(p.name for p in folder.iterdir() if p.is_file())


class Espeak:
    """One espeak-ng instance in this process (the library is a process-wide singleton)."""

    _CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                                 ctypes.c_void_p)

    def __init__(self):
        loader = _loader()
        self.lib = ctypes.CDLL(loader.get_library_path())
        self.data = str(loader.get_data_path()).encode()
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._chunks: list[np.ndarray] = []
        self._callback = self._CALLBACK(self._collect)  # keep a reference: C holds it

    def _collect(self, wav, num, events) -> int:
        if num > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num,)).copy())
        return 0  # 0 = continue synthesis

    def _reset(self, seed: int) -> None:
        self.lib.espeak_Terminate()
        rate = self.lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data, 0)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"espeak-ng initialisation failed (returned {rate})")
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_ng_SetRandSeed(seed)

    def synth(self, text: str, voice: str, rate: int = 175, pitch: int = 50,
              pitch_range: int = 50, seed: int = 0) -> np.ndarray:
        """int16 samples at 22050 Hz of ``text`` spoken by ``voice`` ("en-us+f3").

        Args:
            rate: words per minute (80..450); pitch, pitch_range: 0..100.
            seed: seed of espeak's noise sources.
        """
        self._reset(seed)
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        for param, value in ((RATE, rate), (PITCH, pitch), (RANGE, pitch_range)):
            self.lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        data = text.encode() + b"\0"
        err = self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        if err != 0:
            raise RuntimeError(f"espeak_Synth failed with code {err} for {text!r} ({voice})")
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


def _run_file(jobs_file: str, out_file: str) -> None:
    jobs = json.loads(Path(jobs_file).read_text())
    engine = Espeak()
    clips = [engine.synth(**job) for job in jobs]
    lengths = np.array([len(c) for c in clips], dtype=np.int64)
    samples = np.concatenate(clips) if clips else np.zeros(0, np.int16)
    np.savez(out_file, samples=samples, lengths=lengths)


def synthesize(groups: list[list[dict]], workers: int = 2) -> list[list[np.ndarray]]:
    """Synthesise groups of jobs, each group in a fresh process (see the module docstring).

    Args:
        groups: lists of keyword arguments of :meth:`Espeak.synth`.
        workers: processes run at the same time (the output does not depend on it).

    Returns:
        for every group, its int16 clips at 22050 Hz, in order.
    """
    results: list[list[np.ndarray] | None] = [None] * len(groups)
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        running: list[tuple[int, subprocess.Popen, Path]] = []
        env = {**os.environ, "PYTHONPATH": ""}

        from diffplat.progress import bar

        progress = bar(total=len(groups), desc="espeak-ng voices", unit="group")

        def finish(i: int, proc: subprocess.Popen, out: Path) -> None:
            _, err = proc.communicate()
            progress.update(1)
            if proc.returncode != 0:
                raise RuntimeError(f"espeak-ng worker failed: {err.decode()[-2000:]}")
            with np.load(out) as f:
                ends = np.cumsum(f["lengths"])
                results[i] = np.split(f["samples"], ends[:-1]) if len(ends) else []

        for i, group in enumerate(groups):
            if len(running) >= max(1, workers):
                finish(*running.pop(0))
            jobs_file, out = Path(tmp) / f"jobs{i}.json", Path(tmp) / f"out{i}.npz"
            jobs_file.write_text(json.dumps(group))
            proc = subprocess.Popen([sys.executable, __file__, str(jobs_file), str(out)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            running.append((i, proc, out))
        for item in running:
            finish(*item)
        progress.close()
    return results  # type: ignore[return-value]


if __name__ == "__main__":
    _run_file(sys.argv[1], sys.argv[2])
