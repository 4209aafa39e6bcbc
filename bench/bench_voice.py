"""Voice: speech-to-text speed, end of speech to first audio out, and barge-in latency.

Figures (``make bench ARGS='--only voice'``):

- ``stt_rtf_tiny_en``, ``stt_rtf_base``: whisper's real-time factor (transcription time over
  audio length, median over espeak-ng sentences of 2-3 s) as the voice loop runs it (short
  encoder window, one thread); ``stt_rtf_tiny_en_full_window`` for whisper's stock 30 s window,
  and ``stt_short_window_speedup`` their ratio (meaningful on a loaded machine, where the absolute
  factors are not).
- ``voice_first_audio_s``: from the end of the user's speech (the last voiced frame reaching
  the simulated microphone, in real time) to the first block of the spoken answer reaching the
  (real-time) speaker, through the whole loop on the embedded model, for a one-sentence answer;
  median of warm turns. The detail splits it: end-pointing, whisper (and how much of it the turn
  waited for: whisper starts at the user's pause, before the end of speech), the kernel's first token.
- ``barge_in_ms``: from the start of the user's speech over a spoken answer to playback stopped
  (median).
- ``playback_stop_ms``: from ``Player.stop()`` being called mid-clip to the player having stopped
  (median of clips into a real-time sink; goal <= 100, one 20 ms block plus the sink's buffer).
  The detail has the worst case and how much audio was still written after the stop was asked.
  tests/peripherals/test_playback.py checks that it stops, without a clock.
"""

from __future__ import annotations

import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FIGURES = ("stt_rtf_tiny_en", "stt_rtf_tiny_en_full_window", "stt_rtf_base", "stt_short_window_speedup",
           "voice_first_audio_s", "barge_in_ms", "playback_stop_ms")

SENTENCES = [
    "what is seventeen times twenty four",
    "please remember that the meeting is on tuesday",
    "open the weather page and read it to me",
]


def _spoken(folder: Path, text: str) -> Any:
    from llmos.peripherals.audio import read_wav

    path = folder / f"{abs(hash(text))}.wav"
    if not path.exists():
        subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    return read_wav(path)


def _onset_s(audio: Any) -> float:
    """Where the sound in a clip starts (espeak-ng puts a little silence first)."""
    loud = np.flatnonzero(np.abs(audio.samples) > 0.02)
    return float(loud[0]) / audio.rate if len(loud) else 0.0


def _stt_figures(ctx: Any, folder: Path) -> list[dict[str, Any]]:
    from llmos.peripherals.stt import SpeechToText
    from llmos.peripherals.whisper_weights import WhisperModel

    clips = [_spoken(folder, s) for s in SENTENCES]
    out = []
    for figure, model, short in (("stt_rtf_tiny_en", WhisperModel.TINY_EN, True),
                                 ("stt_rtf_tiny_en_full_window", WhisperModel.TINY_EN, False),
                                 ("stt_rtf_base", WhisperModel.BASE, True)):
        if not ctx.wants(figure):
            continue
        stt = SpeechToText(model, short_window=short)
        stt.load()
        stt.transcribe(clips[0])  # warm-up
        rtfs, texts = [], []
        for _ in range(ctx.reps(2, 1)):
            for clip in clips:
                t = stt.transcribe(clip)
                rtfs.append(t.real_time_factor)
                texts.append(t.text)
        goal = "<= 0.3" if figure == "stt_rtf_tiny_en" else None
        out.append({"name": figure, "value": statistics.median(rtfs), "unit": "x", "goal": goal,
                    "detail": f"{model.value}, {'utterance + 1.5 s window' if short else '30 s window'}, 1 thread; "
                              f"min {min(rtfs):.2f} max {max(rtfs):.2f} over {len(rtfs)} clips of "
                              f"{min(c.seconds for c in clips):.1f}-{max(c.seconds for c in clips):.1f} s; "
                              f"e.g. {texts[0]!r}"})
        ctx.log(f"voice: {figure} = {out[-1]['value']:.3f}")
    rtf = {f["name"]: f["value"] for f in out}
    if "stt_rtf_tiny_en" in rtf and "stt_rtf_tiny_en_full_window" in rtf:
        out.append({"name": "stt_short_window_speedup", "value": rtf["stt_rtf_tiny_en_full_window"] / rtf["stt_rtf_tiny_en"],
                    "unit": "x", "goal": ">= 2",
                    "detail": "tiny.en: whisper's 30 s window over the utterance-sized window, same clips, same run"})
    return out


def _playback_figures(ctx: Any) -> list[dict[str, Any]]:
    from llmos.peripherals.audio import Audio
    from llmos.peripherals.playback import Player, RecordingSink

    rate = 22_050
    t = np.arange(rate * 2) / rate
    clip = Audio((0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate)
    latencies, after = [], []
    for _ in range(ctx.reps(10, 3)):
        sink = RecordingSink(rate, realtime=True)
        player = Player(sink)
        try:
            player.enqueue(clip)
            player.enqueue(clip)  # queued: dropped by the stop
            deadline = time.monotonic() + 30
            while sink.audio().seconds < 0.5 and time.monotonic() < deadline:
                time.sleep(0.005)
            heard = sink.audio().seconds
            asked = time.monotonic()
            player.stop()
            latencies.append(1000 * (player.stopped_at - asked))
            player.wait_idle(30)
            after.append(1000 * (sink.audio().seconds - heard))
        finally:
            player.close()
    value = statistics.median(latencies)
    ctx.log(f"voice: playback_stop_ms = {value:.1f}")
    return [{"name": "playback_stop_ms", "value": round(value, 2), "unit": "ms", "goal": "<= 100",
             "detail": f"median of {len(latencies)}, worst {max(latencies):.1f} ms; audio written after the "
                       f"stop was asked: median {statistics.median(after):.0f} ms, worst {max(after):.0f} ms "
                       f"(20 ms blocks, real-time sink)"}]


class _Events:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def __call__(self, event: Any) -> None:
        self.items.append(event)

    def of(self, kind: type) -> list[Any]:
        return [e for e in list(self.items) if isinstance(e, kind)]

    def wait(self, predicate: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.01)
        return False


def _loop_figures(ctx: Any, folder: Path) -> list[dict[str, Any]]:
    from llmos.app.voice import BargeIn, TurnDone, VoiceLoop, VoiceState
    from llmos.peripherals.audio import Audio
    from llmos.peripherals.microphone import StreamSource
    from llmos.peripherals.playback import RecordingSink
    from llmos.peripherals.stt import SpeechToText
    from llmos.peripherals.tts import TextToSpeech

    out: list[dict[str, Any]] = []
    stt = SpeechToText()
    stt.load()
    tts = TextToSpeech()
    question = _spoken(folder, "what is the capital of france")
    story = _spoken(folder, "tell me a long story about a brave knight and a dragon")
    interrupt = _spoken(folder, "stop, what time is it")
    with ctx.kernel() as kernel:
        sink = RecordingSink(realtime=True)
        loop = VoiceLoop(kernel, stt, tts, sink)
        seen = _Events()
        loop.subscribe(seen)
        mic = StreamSource(realtime=True)
        loop.start(mic)
        try:
            if ctx.wants("voice_first_audio_s"):
                firsts, parts = [], []
                for i in range(1 + ctx.reps(5, 2)):  # the first turn is a warm-up (boot prompt prefill)
                    before = len(seen.of(TurnDone))
                    mic.push(question + Audio.silence(0.8, question.rate))
                    if not seen.wait(lambda: len(seen.of(TurnDone)) > before, 300):
                        raise RuntimeError("a voice turn did not finish in 300 s")
                    done = seen.of(TurnDone)[-1]
                    ctx.log(f"voice: turn {i}: {done.answer!r} {done.timings}")
                    if i and "speech_end_to_first_audio_s" in done.timings:
                        firsts.append(done.timings["speech_end_to_first_audio_s"])
                        parts.append(done.timings)
                if firsts:
                    med = lambda key: statistics.median(p.get(key, float("nan")) for p in parts)  # noqa: E731
                    out.append({"name": "voice_first_audio_s", "value": statistics.median(firsts), "unit": "s",
                                "goal": "<= 1.5",
                                "detail": f"median of {len(firsts)} warm turns ({', '.join(f'{f:.2f}' for f in firsts)}); "
                                          f"end-pointing {med('endpoint_s'):.2f} s, whisper {med('stt_s'):.2f} s "
                                          f"(started at the pause: the turn waited {med('stt_wait_s'):.2f} s for it), "
                                          f"kernel first token {med('kernel_ttft_s'):.2f} s; answer {done.answer!r}"})
            if ctx.wants("barge_in_ms"):
                latencies = []
                for _ in range(ctx.reps(3, 2)):
                    before = len(seen.of(BargeIn))
                    done_before = len(seen.of(TurnDone))
                    mic.push(story + Audio.silence(0.8, story.rate))
                    if not seen.wait(lambda: loop.state is VoiceState.SPEAKING, 300):
                        raise RuntimeError("the story was never spoken")
                    time.sleep(0.4)
                    starts = mic.push(interrupt + Audio.silence(0.8, interrupt.rate))
                    speech_at = mic.started_at + starts + _onset_s(interrupt)
                    if not seen.wait(lambda: len(seen.of(BargeIn)) > before, 10):
                        raise RuntimeError("speaking over the answer did not stop it")
                    barge = seen.of(BargeIn)[-1]
                    latencies.append(1000 * (barge.stopped_at - speech_at))
                    seen.wait(lambda: len(seen.of(TurnDone)) >= done_before + 2, 300)
                    seen.wait(lambda: loop.state is VoiceState.LISTENING, 60)
                out.append({"name": "barge_in_ms", "value": statistics.median(latencies), "unit": "ms",
                            "goal": "<= 200",
                            "detail": f"{', '.join(f'{v:.0f}' for v in latencies)} ms: speech onset in the simulated "
                                      "microphone stream to playback stopped (VAD start: 4 voiced of 5 20-ms frames)"})
        finally:
            mic.end()
            loop.close()
            tts.close()
    return out


def run(ctx: Any) -> list[dict[str, Any]]:
    folder = Path(tempfile.mkdtemp(prefix="llmos-bench-voice-"))
    figures = _playback_figures(ctx) if ctx.wants("playback_stop_ms") else []
    figures += _stt_figures(ctx, folder)
    if ctx.wants("voice_first_audio_s") or ctx.wants("barge_in_ms"):
        figures += _loop_figures(ctx, folder)
    return figures
