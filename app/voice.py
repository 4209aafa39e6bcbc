"""The hands-free voice loop: a kernel client (Qt-free; the CLI and the desktop widget drive it).

    microphone frames -> VAD end-pointing -> whisper -> kernel turn (Priority.VOICE)
                      -> answer tokens, cut into sentences -> pyttsx3 -> player

Threads: *capture* reads the source and runs the end-pointer (so it hears the user even while
the OS speaks); *early* starts whisper when the user pauses (:class:`SpeechPaused`, 0.2 s of
silence), so that when the pause turns out to be the end (0.45 s) the transcript is mostly done;
*turns* takes the transcript (the early one when the utterance did not go on, else a new one) and
waits for its kernel turn; *speaker* hands rendered sentences to the player in order. Kernel
events arrive on the kernel thread.

Barge-in is an interrupt: when speech starts while the OS is thinking or speaking, playback
stops at once (within a 20 ms block) and ``kernel.stop(pid)`` ends the running generation; the
new utterance becomes the next turn of the same conversation (the same process).

Everything the loop does is told to observers as typed events (:class:`VoiceEvent`).
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from llmos.kernel import events
from llmos.kernel.process import Priority
from llmos.peripherals.audio import Audio, AudioError
from llmos.peripherals.microphone import AudioSource
from llmos.peripherals.playback import AudioSink, Player
from llmos.peripherals.vad import (
    Endpointer, SpeechDiscarded, SpeechEnded, SpeechPaused, SpeechStarted, VadOptions,
)

log = logging.getLogger(__name__)


class VoiceState(Enum):
    OFF = "off"
    LISTENING = "listening"  # waiting for speech
    HEARING = "hearing"  # the user is speaking
    THINKING = "thinking"  # transcribing, then the kernel turn
    SPEAKING = "speaking"  # playing the answer


@dataclass(frozen=True)
class VoiceEvent:
    at: float = field(default_factory=time.monotonic, kw_only=True)


@dataclass(frozen=True)
class StateChanged(VoiceEvent):
    state: VoiceState


@dataclass(frozen=True)
class InputLevel(VoiceEvent):
    rms: float  # 0..1
    dbfs: float


@dataclass(frozen=True)
class Heard(VoiceEvent):
    """A transcribed utterance that starts a turn (the live transcript)."""

    text: str
    stt_seconds: float


@dataclass(frozen=True)
class Ignored(VoiceEvent):
    """An utterance that starts no turn: noise, no words, or no wake phrase."""

    reason: str
    text: str = ""


@dataclass(frozen=True)
class BargeIn(VoiceEvent):
    speech_at: float  # when the user's speech started (monotonic)
    stopped_at: float  # when playback had stopped


@dataclass(frozen=True)
class AnswerText(VoiceEvent):
    """A sentence of the answer, as it is handed to text-to-speech."""

    text: str


@dataclass(frozen=True)
class TurnDone(VoiceEvent):
    transcript: str
    answer: str
    syscalls: list[dict[str, Any]]
    stopped: bool
    timings: dict[str, float]


@dataclass(frozen=True)
class VoiceError(VoiceEvent):
    message: str


VoiceObserver = Callable[[VoiceEvent], None]


@dataclass(frozen=True)
class VoiceOptions:
    wake_phrase: str | None = None  # e.g. "hey computer": only utterances that start with it are turns
    wake_window_s: float = 8.0  # after the wake phrase alone, the next utterance is a turn
    vad: VadOptions = field(default_factory=VadOptions)
    level_every: int = 5  # frames between InputLevel events (5 x 20 ms)
    turn_timeout_s: float = 300.0


_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+|\n+")
_MARKUP = re.compile(r"[*_`#>|]+")


_OPERATORS = [(r"\s*(?:\*\*|\^)\s*", " to the power of "), (r"\s*[*×]\s*", " times "),
              (r"\s*[/÷]\s*", " divided by "), (r"\s*\+\s*", " plus "), (r"\s+-\s+", " minus "),
              (r"\s*=\s*", " equals ")]  # a dash without spaces is a date or a range, not minus


def speakable(text: str) -> str:
    """Text as it should be spoken: arithmetic operators between numbers said as words, markup
    removed, whitespace collapsed."""
    for symbol, word in _OPERATORS:
        text = re.sub(rf"(?<=[\d)]){symbol}(?=[\d(])", word, text)
    return re.sub(r"\s+", " ", _MARKUP.sub(" ", text)).strip()


def _normal(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]+", "", re.sub(r"[\s,.!?;:-]+", " ", text.lower())).strip()


def _dbfs(rms: float) -> float:
    import math

    return 20 * math.log10(max(rms, 1e-6))


_BARE_NUMBER = re.compile(r"^\s*-?[\d,]+(\.\d+)?\s*[.!]?\s*$")


def spoken_reply(sentence: str, first: bool, calculation: tuple[str, str] | None) -> str:
    """What to say for a sentence of the answer. A bare number heard alone is hard to follow (and
    to transcribe): when the whole answer is the result of a calculation, say what it is the
    result of ("17 * 24 is 408")."""
    text = speakable(sentence)
    if first and calculation is not None and _BARE_NUMBER.match(text):
        expression, result = calculation
        if text.rstrip(".!").replace(",", "") == result.replace(",", ""):
            return f"{speakable(expression)} is {result}."
    return text


class _Reply:
    """One turn's answer on its way to the speaker: tokens in, sentences out."""

    def __init__(self, turn_id: int) -> None:
        self.turn_id = turn_id
        self.buffer = ""
        self.sentences = 0
        self.calculation: tuple[str, str] | None = None  # (expression, result) of a calculator call
        self.finished = threading.Event()  # every sentence has been handed to the speaker


class VoiceLoop:
    def __init__(self, kernel: Any, stt: Any, tts: Any, sink: AudioSink, options: VoiceOptions | None = None,
                 *, pid: int | None = None, conversation: str | None = None, history: list[Any] | None = None) -> None:
        self.kernel = kernel
        self.stt = stt
        self.tts = tts
        self.options = options or VoiceOptions()
        self.player = Player(sink)
        # A process of its own (``llmos voice``), or the chat process it is given (the desktop:
        # voice turns are turns of the conversation on screen), raised to the voice level while
        # the loop listens and given back the chat level after.
        self._shared = pid is not None
        # ``conversation`` and ``history`` (a journaled conversation) resume it in the process of its own.
        self.pid = pid if pid is not None else kernel.spawn("voice", Priority.VOICE, history=history,
                                                            conversation=conversation)
        self.state = VoiceState.OFF
        self._observers: list[VoiceObserver] = []
        self._lock = threading.RLock()
        self._turn_id = 0  # bumped per utterance and by barge-in: stale sentences are dropped
        self._reply: _Reply | None = None
        self._turn_running = False
        self._queued = 0  # utterances heard, not yet taken up by the turns thread
        self._awake_until = 0.0
        self._turns = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmos-voice-turn")
        self._early_stt = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llmos-voice-early")
        self._early: _Early | None = None  # whisper started at the user's last pause
        self._pending: list[Future[None]] = []
        self._speak_queue: queue.Queue[tuple[int, "Future[Audio] | _DoneMarker"] | None] = queue.Queue()
        self._speaker = threading.Thread(target=self._speak_loop, name="llmos-voice-speaker", daemon=True)
        self._speaker.start()
        self._capture: threading.Thread | None = None
        self._source: AudioSource | None = None
        self._unsubscribe = kernel.bus.subscribe(self._on_kernel_event)
        self.turns_done = 0

    # --- observers ------------------------------------------------------------------------

    def subscribe(self, observer: VoiceObserver) -> Callable[[], None]:
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def _emit(self, event: VoiceEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                log.exception("voice observer failed on %s", type(event).__name__)

    def _set_state(self, state: VoiceState) -> None:
        with self._lock:
            if self.state is state:
                return
            self.state = state
        self._emit(StateChanged(state))

    # --- running --------------------------------------------------------------------------

    def start(self, source: AudioSource) -> None:
        """Listen to ``source`` on a capture thread (returns at once)."""
        if self._capture is not None and self._capture.is_alive():
            raise RuntimeError("the voice loop is already listening")
        self._source = source
        if self._shared:
            self.kernel.set_priority(self.pid, Priority.VOICE)
        if hasattr(self.stt, "load"):  # whisper loads while the user starts talking, not after
            self._pending.append(self._turns.submit(self._preload))
        self._set_state(VoiceState.LISTENING)
        self._capture = threading.Thread(target=self._capture_loop, args=(source,), name="llmos-voice-capture",
                                         daemon=True)
        self._capture.start()

    def _preload(self) -> None:
        try:
            self.stt.load()
        except Exception as exc:  # missing weights: say so now; each utterance will say it again
            self._emit(VoiceError(f"speech to text is not available: {exc}"))

    def run(self, source: AudioSource) -> None:
        """Listen to ``source`` until it ends, then finish the turns it started (blocks)."""
        self.start(source)
        self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the source to end and every turn it started to finish; False on timeout."""
        if self._capture is not None:
            self._capture.join(timeout)
            return not self._capture.is_alive()
        return True

    def stop(self) -> None:
        """Voice mode off: stop listening, speaking and the running turn."""
        self._interrupt()
        if self._source is not None:
            self._source.close()
        if self._capture is not None:
            self._capture.join(3.0)
        self._give_back_priority()
        self._set_state(VoiceState.OFF)

    def use_process(self, pid: int) -> None:
        """Go on in another (chat) process: the window switched conversations. A turn running
        in the old one is stopped; the new one gets the voice level while the loop listens."""
        if pid == self.pid:
            return
        self._interrupt()
        self._give_back_priority()
        self.pid, self._shared = pid, True
        if self._capture is not None and self._capture.is_alive():
            self.kernel.set_priority(pid, Priority.VOICE)

    def _give_back_priority(self) -> None:
        if self._shared:
            try:
                self.kernel.set_priority(self.pid, Priority.CHAT)
            except Exception:  # the kernel has shut down: nothing to give back
                pass

    def close(self) -> None:
        self.stop()
        self._unsubscribe()
        self._early_stt.shutdown(wait=True, cancel_futures=True)
        self._turns.shutdown(wait=True, cancel_futures=True)
        self._speak_queue.put(None)
        self._speaker.join(2.0)
        self.player.close()

    # --- capture thread -------------------------------------------------------------------

    def _capture_loop(self, source: AudioSource) -> None:
        endpointer = Endpointer(self.options.vad)
        frame_s = endpointer.options.frame_ms / 1000
        count = 0
        stream_s = 0.0
        try:
            while True:
                frame = source.read()
                if frame is None:
                    break
                stream_s += frame_s
                count += 1
                if count % self.options.level_every == 0:
                    rms = float((frame ** 2).mean() ** 0.5)
                    self._emit(InputLevel(rms, _dbfs(rms)))
                for event in endpointer.feed(frame):
                    self._on_vad(event, time.monotonic() - (stream_s - getattr(event, "ended_s", stream_s)))
            for event in endpointer.flush():
                self._on_vad(event, time.monotonic())
        except AudioError as exc:
            self._emit(VoiceError(str(exc)))
        except Exception as exc:  # a broken source must not take the app down
            log.exception("voice capture failed")
            self._emit(VoiceError(f"the microphone stopped: {exc}"))
        for future in list(self._pending):  # the stream has ended: finish what it started
            try:
                future.result(self.options.turn_timeout_s)
            except Exception:  # reported by the turn itself; cancelled on close
                pass
        self._give_back_priority()
        self._set_state(VoiceState.OFF)

    def _on_vad(self, event: Any, speech_end_at: float) -> None:
        if isinstance(event, SpeechPaused):
            self._start_early(event)
        elif isinstance(event, SpeechStarted):
            self._drop_early()
            speech_at = time.monotonic()
            with self._lock:
                busy = self._turn_running or self.player.playing
            if busy:
                self._barge_in(speech_at)
            self._set_state(VoiceState.HEARING)
        elif isinstance(event, SpeechEnded):
            early = self._take_early(event)
            with self._lock:
                self._queued += 1
            self._set_state(VoiceState.THINKING)
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._turns.submit(self._utterance, event, speech_end_at, early))
        elif isinstance(event, SpeechDiscarded):
            self._drop_early()
            with self._lock:
                idle = not self._turn_running and not self.player.playing
            if idle:
                self._set_state(VoiceState.LISTENING)

    # early transcription: whisper at the pause, used if the pause was the end

    def _start_early(self, pause: SpeechPaused) -> None:
        self._drop_early()
        if hasattr(self.stt, "transcribe"):
            self._early = _Early(pause.started_s, len(pause.audio.samples),
                                 self._early_stt.submit(self.stt.transcribe, pause.audio))

    def _drop_early(self) -> None:
        early, self._early = self._early, None
        if early is not None:
            early.future.cancel()  # not started yet: never runs; running: its result is ignored

    def _take_early(self, ended: SpeechEnded) -> "Future[Any] | None":
        early, self._early = self._early, None
        if early is None:
            return None
        if early.started_s == ended.started_s and early.samples == len(ended.audio.samples):
            return early.future
        early.future.cancel()  # the user went on speaking after the pause
        return None

    def _interrupt(self) -> None:
        with self._lock:
            self._turn_id += 1
            running = self._turn_running
        self.player.stop()
        if running:
            self.kernel.stop(self.pid)

    def _barge_in(self, speech_at: float) -> None:
        self._interrupt()
        self._emit(BargeIn(speech_at, self.player.stopped_at or time.monotonic()))

    # --- turns thread ---------------------------------------------------------------------

    def _utterance(self, utterance: SpeechEnded, speech_end_at: float, early: "Future[Any] | None" = None) -> None:
        with self._lock:
            self._queued -= 1
        try:
            self._turn(utterance, speech_end_at, early)
        except Exception as exc:
            log.exception("voice turn failed")
            self._emit(VoiceError(str(exc)))
        finally:
            self._back_to_listening()

    def _turn(self, utterance: SpeechEnded, speech_end_at: float, early: "Future[Any] | None" = None) -> None:
        picked = time.monotonic()
        try:
            transcript = self._transcript(utterance, early)
        except Exception as exc:  # missing weights, a torch error
            self._emit(VoiceError(f"speech to text failed: {exc}"))
            return
        if not transcript.is_speech:
            self._emit(Ignored("no words heard (noise or silence)", transcript.text))
            return
        request = self._request(transcript.text)
        if request is None:
            return
        self._emit(Heard(request, transcript.seconds))
        with self._lock:
            self._turn_id += 1
            reply = self._reply = _Reply(self._turn_id)
            self._turn_running = True
        self.player.first_block_at = None
        started = time.monotonic()
        from llmos.kernel.loop import TurnError

        try:
            result = self.kernel.submit(self.pid, request).result(self.options.turn_timeout_s)
        except TurnError as exc:
            with self._lock:
                self._turn_running = False
            self._emit(VoiceError(str(exc)))
            return
        with self._lock:
            self._turn_running = False
            current = reply.turn_id == self._turn_id
        if current:
            self._flush(reply, final=True)
        self._speak_queue.put((reply.turn_id, _DoneMarker(reply)))
        reply.finished.wait(60.0)
        if current:
            self.player.wait_idle(600.0)
        first = self.player.first_block_at
        timings = {
            "stt_s": transcript.seconds,  # whisper's own time
            "stt_wait_s": started - picked,  # what the turn waited for it (less when it started early)
            "stt_early": 1.0 if early is not None else 0.0,
            "audio_s": utterance.audio.seconds,
            "endpoint_s": max(0.0, picked - speech_end_at),  # hangover + queueing
            "turn_s": time.monotonic() - started,
            **{f"kernel_{k}": float(v) for k, v in result.timings.items()},
        }
        if first is not None:
            timings["speech_end_to_first_audio_s"] = first - speech_end_at
        with self._lock:  # a barge-in during playback also interrupts the turn
            interrupted = reply.turn_id != self._turn_id
        self.turns_done += 1
        self._emit(TurnDone(request, result.answer, result.syscalls, result.stopped or interrupted, timings))

    def _transcript(self, utterance: SpeechEnded, early: "Future[Any] | None") -> Any:
        if early is not None:
            try:
                return early.result(self.options.turn_timeout_s)
            except CancelledError:  # dropped by a barge-in or a close: transcribe afresh
                pass
        return self.stt.transcribe(utterance.audio)

    def _request(self, text: str) -> str | None:
        """The request in an utterance, or None (after an Ignored event) when it is not one."""
        wake = self.options.wake_phrase
        if not wake:
            return text
        now = time.monotonic()
        heard, phrase = _normal(text), _normal(wake)
        if heard.startswith(phrase):
            words = len(phrase.split())
            rest = " ".join(text.split()[words:]).lstrip(" ,.!?:;-")
            if rest and re.search(r"\w", rest):
                return rest
            self._awake_until = now + self.options.wake_window_s
            self._emit(Ignored("wake phrase heard: listening for the request", text))
            return None
        if now < self._awake_until:
            self._awake_until = 0.0
            return text
        self._emit(Ignored(f"no wake phrase ({wake!r})", text))
        return None

    def _back_to_listening(self) -> None:
        with self._lock:
            if self._turn_running or self._queued or self.state is VoiceState.HEARING:
                return
        if self._capture is not None and self._capture.is_alive():
            self._set_state(VoiceState.LISTENING)

    # --- answer tokens -> sentences -> speaker --------------------------------------------

    def _on_kernel_event(self, event: events.Event) -> None:
        if isinstance(event, events.SyscallFinished) and event.pid == self.pid and event.ok:
            with self._lock:
                reply = self._reply
            expression = (event.arguments or {}).get("expression")
            if reply is not None and event.device == "calculator" and isinstance(expression, str):
                reply.calculation = (expression, str(event.result))
        if isinstance(event, events.Token) and event.pid == self.pid:
            with self._lock:
                reply = self._reply
                if reply is None or reply.turn_id != self._turn_id or not self._turn_running:
                    return
                reply.buffer += event.text
            self._flush(reply, final=False)

    def _flush(self, reply: _Reply, final: bool) -> None:
        with self._lock:
            parts = _SENTENCE_END.split(reply.buffer)
            ready, reply.buffer = (parts, "") if final else (parts[:-1], parts[-1])
        for sentence in ready:
            text = spoken_reply(sentence, reply.sentences == 0 and final, reply.calculation)
            if text and re.search(r"\w", text):
                reply.sentences += 1
                self._emit(AnswerText(text))
                self._speak_queue.put((reply.turn_id, self.tts.synthesize_async(text)))

    def _speak_loop(self) -> None:
        while True:
            item = self._speak_queue.get()
            if item is None:
                return
            turn_id, future = item
            if isinstance(future, _DoneMarker):
                future.reply.finished.set()
                continue
            try:
                audio = future.result(60.0)
            except Exception as exc:
                self._emit(VoiceError(f"text to speech failed: {exc}"))
                continue
            with self._lock:
                current = turn_id == self._turn_id
            if current:
                self._set_state(VoiceState.SPEAKING)
                self.player.enqueue(audio)


@dataclass(frozen=True)
class _Early:
    started_s: float  # which utterance (its start in stream time)
    samples: int  # how long it was at the pause
    future: "Future[Any]"


@dataclass
class _DoneMarker:
    reply: _Reply

