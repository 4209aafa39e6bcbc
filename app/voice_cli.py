"""`llmos voice`: hands-free voice in the terminal, or one voice turn from a WAV file.

    llmos voice                                   default microphone and speaker, until Ctrl-C
    llmos voice --input q.wav --output r.wav --json   one turn from a file; the spoken reply to a file
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmos.app.voice import (AnswerText, BargeIn, Heard, Ignored, StateChanged, TurnDone, VoiceError,
                             VoiceEvent, VoiceLoop)
from llmos.app.voice_config import speech_to_text, text_to_speech, voice_options
from llmos.kernel.config import STT_MODELS, Config

EXIT_OK, EXIT_ERROR = 0, 1


def add_parser(sub: Any) -> None:
    voice = sub.add_parser("voice", help="hands-free voice: talk to llmos (or one turn from a WAV file)")
    voice.add_argument("--input", metavar="WAV", help="one turn from this recording instead of the microphone")
    voice.add_argument("--output", metavar="WAV", help="write the spoken reply here instead of playing it")
    voice.add_argument("--json", action="store_true", help="with --input: print one JSON object")
    voice.add_argument("--wake", metavar="PHRASE", help='only answer utterances that start with it, e.g. '
                       '"hey computer" (config key voice_wake_phrase; --wake "" answers every utterance)')
    voice.add_argument("--stt", choices=list(STT_MODELS), default=None,
                       help="whisper model (config key stt_model, default tiny.en)")
    voice.add_argument("--resume", metavar="ID", help="continue a journaled conversation (id or unique prefix)")


def _error(message: str) -> int:
    print(f"llmos: {message}", file=sys.stderr)
    return EXIT_ERROR


def _sink(output: str | None) -> tuple[Any, str | None]:
    """The sink for replies, and a note when there is no audio output."""
    from llmos.peripherals.playback import RecordingSink, SoundDeviceSink, SpeakerError

    if output:
        return RecordingSink(), None
    try:
        return SoundDeviceSink(), None
    except SpeakerError as exc:
        return RecordingSink(), f"{exc}: replies are shown as text only"


def run(args: argparse.Namespace, config: Config, start_kernel: Callable[[Config, bool], Any]) -> int:
    from llmos.peripherals.audio import AudioError, read_wav
    from llmos.peripherals.microphone import MicrophoneError, SoundDeviceMicrophone, file_source
    from llmos.peripherals.vad import find_speech
    from llmos.peripherals.whisper_weights import WeightsError

    options = voice_options(config, args.wake)
    if args.input:  # refuse bad input before the model loads
        try:
            audio = read_wav(Path(args.input))
        except AudioError as exc:
            return _error(str(exc))
        if not find_speech(audio + audio.silence(1.0, audio.rate), options.vad):
            return _error(f"{args.input}: no speech heard (silence or noise)")
        source: Any = file_source(audio)
    else:
        try:
            source = SoundDeviceMicrophone()
        except MicrophoneError as exc:
            return _error(f"{exc}; the rest of llmos works without one (try `llmos chat`, or "
                          "`llmos voice --input FILE.wav`)")
    resume: dict[str, Any] = {}
    if getattr(args, "resume", None):
        from llmos.app import history_cli

        resume = history_cli.resume(config, args.resume)  # an unknown id: one line, before the model loads
    stt = speech_to_text(config, args.stt)
    try:
        stt.load()
    except WeightsError as exc:
        return _error(str(exc))
    sink, note = _sink(args.output)
    if note:
        print(f"llmos: {note}", file=sys.stderr)
    if not args.input:
        print("llmos: loading the model ...", file=sys.stderr)
    kernel = start_kernel(config, args.yes)
    tts = text_to_speech(config)
    loop = VoiceLoop(kernel, stt, tts, sink, options, **resume)
    conversation = next((p["conversation"] for p in kernel.processes() if p["pid"] == loop.pid), None)
    done: list[TurnDone] = []
    problems: list[str] = []
    loop.subscribe(lambda e: done.append(e) if isinstance(e, TurnDone) else None)
    loop.subscribe(lambda e: problems.append(e.message if isinstance(e, VoiceError) else e.reason)
                   if isinstance(e, (VoiceError, Ignored)) else None)
    if not (args.input and args.json):
        loop.subscribe(_TerminalView())
    try:
        if args.input:
            loop.run(source)
        else:
            print("llmos voice: listening (Ctrl-C to quit)", file=sys.stderr)
            loop.start(source)
            loop.wait()
    except KeyboardInterrupt:
        print(file=sys.stderr)
    finally:
        loop.close()
        tts.close()
        kernel.shutdown()
    if not args.input:
        return EXIT_OK
    if not done:
        return _error(f"{args.input}: no turn was run ({'; '.join(problems) or 'nothing was heard'})")
    turn = done[0]
    if args.output:
        from llmos.peripherals.audio import write_wav

        write_wav(Path(args.output), sink.audio())
    if args.json:
        print(json.dumps({"transcript": turn.transcript, "answer": turn.answer, "syscalls": turn.syscalls,
                          "stopped": turn.stopped, "timings": turn.timings, "output": args.output,
                          "conversation": conversation},
                         ensure_ascii=False))
    return EXIT_OK


class _TerminalView:
    """Prints what the voice loop hears and says."""

    def __call__(self, event: VoiceEvent) -> None:
        if isinstance(event, StateChanged):
            print(f"[{event.state.value}]", file=sys.stderr, flush=True)
        elif isinstance(event, Heard):
            print(f"you: {event.text}", flush=True)
        elif isinstance(event, AnswerText):
            print(f"llmos: {event.text}", flush=True)
        elif isinstance(event, BargeIn):
            print(f"[interrupted: stopped speaking in {1000 * (event.stopped_at - event.speech_at):.0f} ms]",
                  file=sys.stderr, flush=True)
        elif isinstance(event, Ignored):
            print(f"[ignored: {event.reason}]", file=sys.stderr, flush=True)
        elif isinstance(event, VoiceError):
            print(f"llmos: {event.message}", file=sys.stderr, flush=True)
