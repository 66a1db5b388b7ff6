"""Sound classes of SynthSphere: one procedural timbre per class, all from a seeded numpy Generator.

Every sound is synthesised here (no recordings), so clips are licence-free and reproducible. Each
class has its own spectral and temporal signature (sweep, chirps, bursts, rumble, formants,
inharmonic partials, hits, noise, melody) and is active at least once per second, so each 1 s
DoA segment hears it. `synthesize` returns mono (N,) float64 at unit RMS.
"""

from collections.abc import Callable

import numpy as np
from scipy.signal import butter, sosfilt

SoundFn = Callable[[np.random.Generator, int, int], np.ndarray]


def synthesize(sound_class: str, rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """A mono (N,) signal of `sound_class` with unit RMS."""
    if sound_class not in SOUND_CLASSES:
        raise ValueError(f"unknown sound class {sound_class!r}; known: {', '.join(SOUND_CLASSES)}")
    signal = SOUND_CLASSES[sound_class](rng, n_samples, sample_rate)
    return signal / max(float(np.sqrt(np.mean(signal**2))), 1e-12)


# --- building blocks ------------------------------------------------------------------------


def _phase(freq: np.ndarray, sample_rate: int) -> np.ndarray:
    """Running phase (rad) of an oscillator whose frequency (Hz) changes per sample."""
    return 2.0 * np.pi * np.cumsum(freq) / sample_rate


def _band(signal: np.ndarray, low: float, high: float, sample_rate: int, order: int = 2) -> np.ndarray:
    sos = butter(order, [low, high], btype="bandpass", fs=sample_rate, output="sos")
    return sosfilt(sos, signal)


def _onsets(
    rng: np.random.Generator, n_samples: int, sample_rate: int, gap_s: tuple[float, float]
) -> list[int]:
    """Event start samples: the first within 0.2 s, then gaps drawn uniformly from `gap_s`."""
    starts, t = [], rng.uniform(0.0, 0.2)
    while t * sample_rate < n_samples:
        starts.append(int(t * sample_rate))
        t += rng.uniform(*gap_s)
    return starts


def _add(out: np.ndarray, start: int, event: np.ndarray) -> None:
    """Mix `event` into `out` from `start`, cut at the end."""
    stop = min(len(out), start + len(event))
    if stop > start:
        out[start:stop] += event[: stop - start]


# --- the classes ----------------------------------------------------------------------------


def siren(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Wailing square-ish tone sweeping 600-1500 Hz at a slow LFO."""
    t = np.arange(n_samples) / sample_rate
    low, span, lfo = rng.uniform(600, 800), rng.uniform(500, 700), rng.uniform(0.3, 0.6)
    freq = low + span * (0.5 - 0.5 * np.cos(2 * np.pi * lfo * t + rng.uniform(0, 2 * np.pi)))
    phase = _phase(freq, sample_rate)
    return sum(np.sin(k * phase) / k for k in (1, 3, 5, 7))


def bird(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Groups of short 2.5-6 kHz chirps sweeping up or down."""
    out = np.zeros(n_samples)
    for start in _onsets(rng, n_samples, sample_rate, (0.35, 0.8)):
        for _ in range(int(rng.integers(2, 5))):
            length = int(rng.uniform(0.04, 0.1) * sample_rate)
            x = np.arange(length) / length
            freq = rng.uniform(2800, 4500) + rng.uniform(-1500, 1500) * x
            chirp = np.sin(_phase(freq, sample_rate)) * np.sin(np.pi * x) ** 2
            _add(out, start, chirp)
            start += length + int(rng.uniform(0.02, 0.06) * sample_rate)
    return out


def dog(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Bark bursts: a falling rough harmonic pulse with noise, resonant around 0.4-2.5 kHz."""
    out = np.zeros(n_samples)
    for start in _onsets(rng, n_samples, sample_rate, (0.3, 0.75)):
        length = int(rng.uniform(0.12, 0.22) * sample_rate)
        x = np.arange(length) / length
        phase = _phase(rng.uniform(380, 560) * (1.0 - 0.35 * x), sample_rate)
        voice = sum(np.sin(k * phase) / k for k in range(1, 13)) + 0.4 * rng.standard_normal(length)
        _add(out, start, voice * np.minimum(x / 0.05, 1.0) * np.exp(-4.0 * x))
    return _band(out, 400, 2500, sample_rate)


def engine(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Low harmonic rumble (30-55 Hz fundamental) amplitude-modulated at the firing rate."""
    t = np.arange(n_samples) / sample_rate
    base = rng.uniform(30, 55)
    phase = _phase(
        base * (1.0 + 0.05 * np.sin(2 * np.pi * 0.15 * t + rng.uniform(0, 2 * np.pi))), sample_rate
    )
    harmonics = sum(np.sin(k * phase) / k**0.7 for k in range(1, 25))
    firing = 1.0 + 0.6 * np.sin(2 * np.pi * rng.uniform(8, 14) * t)
    noise = _band(rng.standard_normal(n_samples), 150, 1200, sample_rate)
    return harmonics * firing + 3.0 * noise * firing


# (F1, F2, F3) in Hz of a few vowels: the babble moves between them syllable by syllable.
_VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410))


def speech(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Speech-like babble: a glottal pulse train with intonation through changing vowel formants."""
    t = np.arange(n_samples) / sample_rate
    f0 = rng.uniform(100, 220) * (1.0 + 0.15 * np.sin(2 * np.pi * 0.5 * t + rng.uniform(0, 2 * np.pi)))
    cycles = np.cumsum(f0) / sample_rate
    pulses = np.diff(np.floor(cycles), prepend=0.0) + 0.05 * rng.standard_normal(n_samples)
    out = np.zeros(n_samples)
    for start in _onsets(rng, n_samples, sample_rate, (0.18, 0.3)):
        length = int(rng.uniform(0.12, 0.2) * sample_rate)
        segment = pulses[start : start + length]
        formants = _VOWELS[int(rng.integers(len(_VOWELS)))]
        voiced = sum(_band(segment, f * 0.9, f * 1.1, sample_rate) for f in formants)
        _add(out, start, voiced * np.sin(np.pi * np.arange(len(segment)) / len(segment)))
    return out


# Inharmonic partials of a struck bell (ratios to the strike tone, relative amplitudes, decay in s).
_BELL_PARTIALS = ((0.56, 1.0, 2.5), (0.92, 0.7, 2.0), (1.19, 1.0, 1.6), (1.71, 1.6, 1.2), (2.0, 1.3, 0.9),
                  (2.74, 1.0, 0.7), (3.0, 0.9, 0.6), (3.76, 0.7, 0.45), (4.07, 0.7, 0.4))  # fmt: skip


def bell(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Strikes of inharmonic decaying partials (Risset-like bell) every 0.8-1.6 s."""
    out = np.zeros(n_samples)
    strike_tone = rng.uniform(650, 850)
    length = int(2.5 * sample_rate)
    t = np.arange(length) / sample_rate
    for start in _onsets(rng, n_samples, sample_rate, (0.8, 1.6)):
        partials = (
            a * np.exp(-t / d) * np.sin(2 * np.pi * r * strike_tone * t) for r, a, d in _BELL_PARTIALS
        )
        _add(out, start, sum(partials) * np.minimum(t / 0.002, 1.0))
    return out


def drum(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """Percussive hits on an eighth-note grid: a noise burst over a falling low body tone."""
    out = np.zeros(n_samples)
    step_s = 30.0 / rng.uniform(100, 150)
    length = int(0.25 * sample_rate)
    t = np.arange(length) / sample_rate
    for step, start in enumerate(range(0, n_samples, int(step_s * sample_rate))):
        if step % 4 != 0 and rng.random() > 0.6:
            continue
        body = np.sin(_phase(rng.uniform(90, 150) * (1.0 - 0.5 * t / t[-1]), sample_rate)) * np.exp(-t / 0.08)
        snap = _band(rng.standard_normal(length), 1500, 9000, sample_rate) * np.exp(
            -t / rng.uniform(0.03, 0.07)
        )
        _add(out, start, body + 2.0 * snap)
    return out


def water(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """A stream: band-limited noise with slow random swell, plus bubbles (short rising blips)."""
    swell_points = rng.uniform(0.5, 1.0, size=n_samples // sample_rate + 2)
    swell = np.interp(np.arange(n_samples) / sample_rate, np.arange(len(swell_points)), swell_points)
    out = _band(rng.standard_normal(n_samples), 400, 3000, sample_rate) * swell
    for start in _onsets(rng, n_samples, sample_rate, (0.03, 0.12)):
        length = int(rng.uniform(0.01, 0.03) * sample_rate)
        x = np.arange(length) / length
        blip = np.sin(_phase(rng.uniform(800, 2500) * (1.0 + 0.8 * x), sample_rate)) * np.sin(np.pi * x)
        _add(out, start, 0.3 * blip)
    return out


_PENTATONIC = (0, 2, 4, 7, 9, 12, 14, 16)


def piano(rng: np.random.Generator, n_samples: int, sample_rate: int) -> np.ndarray:
    """A melody on a major pentatonic scale: stiff-string partials with fast decay of the upper ones."""
    out = np.zeros(n_samples)
    root = rng.uniform(52, 62)
    length = int(1.5 * sample_rate)
    t = np.arange(length) / sample_rate
    for start in _onsets(rng, n_samples, sample_rate, (0.2, 0.45)):
        midi = root + _PENTATONIC[int(rng.integers(len(_PENTATONIC)))]
        f = 440.0 * 2.0 ** ((midi - 69.0) / 12.0)
        partials = (
            np.sin(2 * np.pi * k * f * np.sqrt(1.0 + 4e-4 * k**2) * t) * np.exp(-t * k**0.5 / 0.6) / k**1.2
            for k in range(1, 9)
        )
        _add(out, start, sum(partials) * np.minimum(t / 0.004, 1.0))
    return out


SOUND_CLASSES: dict[str, SoundFn] = {
    "siren": siren,
    "bird": bird,
    "dog": dog,
    "engine": engine,
    "speech": speech,
    "bell": bell,
    "drum": drum,
    "water": water,
    "piano": piano,
}
"""Class name -> synthesiser `fn(rng, n_samples, sample_rate) -> (N,)`."""
