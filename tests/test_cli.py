"""Every command-line tool speaks one dialect (tal_common/cli.py):

* each example shown in a tool's ``--help`` (and each tool command of the README's bash blocks) parses with the
  tool's own parser, with its ``--set`` overrides validated against the tool's config;
* every option has help, defaults are shown, descriptions carry no raw reST markup;
* old option spellings still work and print one deprecation line;
* Ctrl-C: one line, exit status 130, what to rerun (a real SIGINT to a training run, a patched one elsewhere);
* ``extract-features inspect F | head -1`` ends quietly.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from eval import chance
from eval import cli as evaluate_cli
from feature_extraction import cli as extract_cli
from feature_extraction.config import ExtractConfig, feature_identity, preset_path, resolve_config
from localization import detect_cli, localize_cli, train_cli
from localization.config import LocalizeConfig
from loc_synth import make_hacs
from tal_common import annotations_cli, demo_cli
from tal_common.cli import HelpFormatter, parse_args
from tal_common.config import ConfigError, load_config, resolve_config_path

ROOT = Path(__file__).resolve().parents[1]
EVAL_DATA = ROOT / "tests" / "data" / "eval"

# tool name -> main; "extract-features" dispatches its commands itself
MAINS: dict[str, Callable] = {
    "extract-features": extract_cli.main, "train-localizer": train_cli.main, "localize": localize_cli.main,
    "evaluate": evaluate_cli.main, "detect": detect_cli.main, "tal-annotations": annotations_cli.main,
    "make-demo-dataset": demo_cli.main, "python -m eval.chance": chance.main,
}
MODULES = {"feature_extraction.cli": "extract-features", "localization.train_cli": "train-localizer",
           "localization.localize_cli": "localize", "eval.cli": "evaluate", "localization.detect_cli": "detect",
           "eval.chance": "python -m eval.chance"}


def _console_scripts() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    lines = [line.split("=") for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()]
    return {name.strip(): target.strip() for name, target in lines}


def test_every_console_script_is_checked_here():
    scripts = _console_scripts()
    assert set(scripts) == set(MAINS) - {"python -m eval.chance"}
    for name, target in scripts.items():
        module, func = target.split(":")
        assert MAINS[name].__module__ == module and func == "main", name


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser a user meets: each tool, each extract-features command, tal-annotations from-csv."""
    parsers = {f"extract-features {c}": extract_cli.build_parser(c) for c in extract_cli.SUBCOMMANDS}
    parsers.update({"train-localizer": train_cli.build_parser(), "localize": localize_cli.build_parser(),
                    "evaluate": evaluate_cli.build_parser(), "detect": detect_cli.build_parser(),
                    "make-demo-dataset": demo_cli.build_parser(), "python -m eval.chance": chance.build_parser()})
    top = annotations_cli.build_parser()
    parsers["tal-annotations"] = top
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parsers.update({f"tal-annotations {name}": p for name, p in sub.choices.items()})
    return parsers


def _command(tokens: list[str]) -> tuple[str, list[str]]:
    """``["train-localizer", "--config", ...]`` (or a torchrun / python -m line) -> (tool, its arguments)."""
    if tokens[0] == "torchrun":
        module = tokens[tokens.index("-m") + 1]
        return MODULES[module], tokens[tokens.index("-m") + 2:]
    if tokens[:2] == ["python", "-m"]:
        return MODULES[tokens[2]], tokens[3:]
    return tokens[0], tokens[1:]


def check_command(line: str) -> None:
    """Parse one example command with its tool's parser (current spellings only: no renaming) and validate its
    config: the config file or packaged name and every ``--set`` override. Raises on any problem."""
    tokens = shlex.split(line, comments=True)
    if "|" in tokens:
        tokens = tokens[: tokens.index("|")]
    tool, argv = _command(tokens)
    if tool == "extract-features":
        command, rest = extract_cli.split_command(argv)
        args = extract_cli.build_parser(command).parse_args(rest)
        if command == "extract":
            resolve_config(extract_cli.load_extract_config(args), cuda=False)
    elif tool == "train-localizer":
        args = train_cli.build_parser().parse_args(argv)
        load_config(LocalizeConfig, resolve_config_path(args.config, "localize"), args.overrides)
    elif tool == "tal-annotations":
        annotations_cli.build_parser().parse_args(argv)
    else:
        _parsers()[tool].parse_args(argv)


def _help_text(tool: str, argv: list[str], capsys: pytest.CaptureFixture) -> str:
    """What ``TOOL ARGV --help`` prints (it exits 0)."""
    try:
        status = MAINS[tool]([*argv, "--help"])  # evaluate returns argparse's status
    except SystemExit as stop:
        status = stop.code
    assert status == 0
    return capsys.readouterr().out


def _examples(text: str) -> list[str]:
    """The command lines of an ``example(s):`` epilog, continuation lines joined."""
    lines = text.split("\nexample")[-1].splitlines()[1:]
    joined, current = [], ""
    for line in lines:
        if not line.startswith("  "):
            break
        current += line.strip().removesuffix("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            joined.append(current.strip())
            current = ""
    return joined


HELP_PAGES = [("extract-features", []), *[("extract-features", [c]) for c in ("inspect", "verify", "import", "export")],
              ("train-localizer", []), ("localize", []), ("evaluate", []), ("detect", []), ("tal-annotations", []),
              ("tal-annotations", ["from-csv"]), ("make-demo-dataset", []), ("python -m eval.chance", [])]


@pytest.mark.parametrize("tool, argv", HELP_PAGES, ids=[" ".join([t, *a]) for t, a in HELP_PAGES])
def test_help_examples_parse_and_their_overrides_are_valid(tool, argv, capsys):
    text = _help_text(tool, argv, capsys)
    examples = _examples(text)
    assert examples, f"{tool} {argv}: --help shows no example"
    for example in examples:
        check_command(example)
    # every "--set KEY=VALUE" the help mentions (option help included) is a valid override of that tool
    for override in re.findall(r"--set\s+([a-z_.]+=\S+)", text):
        if tool == "extract-features" and not argv:
            resolve_config(load_config(ExtractConfig, None, [override], base=preset_path("hacs")), cuda=False)
        elif tool == "train-localizer":
            load_config(LocalizeConfig, None, [override])
        else:
            pytest.fail(f"{tool}: --set {override} in a tool without a config")


def test_the_checker_catches_a_bad_example():
    """The checks above are not vacuous: a wrong key, a wrong value, an old spelling and a typo all fail."""
    with pytest.raises(ConfigError, match="base_width"):
        check_command("train-localizer --config hacs_bmn --features f.h5 --annotations a.json --work-dir r "
                      "--set model.base_width=16")
    with pytest.raises(ConfigError, match="sample_fps"):
        check_command("extract-features v/ -o f.h5 --preset demo --set sampling.sample_fps=abc")
    with pytest.raises(ConfigError, match="not found"):
        check_command("train-localizer --config hacs_bnm --features f.h5 --annotations a.json --work-dir r")
    for line in ("evaluate --dataset hacs --ground-truth g.json --predictions p.json -o r",
                 "localize --run r --features f.h5 --annotations a.json --output-file d.json"):
        with pytest.raises(SystemExit):
            check_command(line)


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            tokens = shlex.split(line, comments=True)
            if tokens and (tokens[0] in MAINS or tokens[0] == "torchrun" or tokens[:3] == ["python", "-m", "eval.chance"]):
                commands.append(line)
    return commands


def test_readme_commands_parse_with_current_spellings():
    commands = _readme_commands()
    assert len(commands) >= 25 and any(c.startswith("tal-annotations from-csv") for c in commands)
    for line in commands:
        check_command(line)


@pytest.mark.parametrize("name", sorted(_parsers()))
def test_every_option_has_help_and_its_default_shown(name):
    parser = _parsers()[name]
    assert issubclass(parser.formatter_class, HelpFormatter), name
    text = parser.format_help()
    assert parser.description and "``" not in text and ":mod:" not in text and ":func:" not in text, name
    formatter = parser.formatter_class(prog=parser.prog)
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        shown = action.default is not None and action.default is not False and action.default != []
        if shown and action.option_strings:
            assert "default" in formatter._get_help_string(action), f"{name}: {action.option_strings} hides its default"


def test_help_formatter_shows_zero_but_not_none_or_flags():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--workers", type=int, default=0, help="w")
    parser.add_argument("--limit", type=int, default=None, help="l")
    parser.add_argument("--fast", action="store_true", help="f")
    parser.add_argument("--seed", type=int, default=3, help="s (default 3, fixed)")
    text = " ".join(parser.format_help().split())
    assert "w (default: 0)" in text and "l --fast" in text and "f --seed" in text and "s (default 3, fixed)" in text
    assert text.count("default") == 2


def test_renamed_options_work_and_say_so_once(tmp_path, capsys):
    out = tmp_path / "report"
    argv = ["--dataset", "activitynet", "--ground-truth", str(EVAL_DATA / "anet_val300_gt.json"),
            "--predictions", str(EVAL_DATA / "anet_val300_pred_seed11.json"), f"--out={out}"]
    assert evaluate_cli.main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == ["evaluate: --ground-truth is deprecated, use --annotations",
                       "evaluate: --out is deprecated, use --output"]
    assert json.loads((out / "report.json").read_text())["average_mAP"] > 0
    args = parse_args(detect_cli.build_parser(), ["v.mp4", "--work-dir", "r", "-o", "d", "--ground-truth", "g.json",
                                                  "--ground-truth", "h.json"], detect_cli.RENAMED)
    assert (args.annotations, args.run) == (Path("h.json"), Path("r"))
    assert capsys.readouterr().err == "detect: --ground-truth is deprecated, use --annotations\n"
    args = parse_args(demo_cli.build_parser(), ["--out", "d"], demo_cli.RENAMED)
    assert args.output == Path("d")
    args = parse_args(localize_cli.build_parser(), ["--work-dir", "r", "--features", "f.h5", "--annotations", "a.json",
                                                    "-o", "d.json", "--num-workers", "2"], localize_cli.RENAMED)
    assert (args.run, args.workers) == (Path("r"), 2)
    assert capsys.readouterr().err.splitlines()[-1] == "localize: --num-workers is deprecated, use --workers"


# --------------------------------------------------------------------------- Ctrl-C and closed pipes

def _raise_interrupt(*args, **kwargs):
    raise KeyboardInterrupt


INTERRUPTS = [
    ("extract-features", "feature_extraction.cli.run_extract", ["v/", "-o", "f.h5", "--preset", "demo"], "rerun the same command"),
    ("extract-features", "feature_extraction.cli.inspect_file", ["inspect", "f.h5"], "rerun"),
    ("train-localizer", "localization.train_cli.train",
     ["--config", "demo_bmn", "--features", "f.h5", "--annotations", "a.json", "--work-dir", "runs/x"], "--resume"),
    ("localize", "localization.localize_cli.load_run",
     ["--run", "r", "--features", "f.h5", "--annotations", "a.json", "-o", "d.json"], "rerun the same command"),
    ("detect", "localization.detect_cli.run_detect", ["v.mp4", "--run", "r", "-o", "out"], "rerun the same command"),
    ("evaluate", "eval.cli._read_inputs",
     ["--dataset", "hacs", "--annotations", "g.json", "--predictions", "p.json", "-o", "r"], "rerun the same command"),
    ("tal-annotations", "tal_common.annotations_cli.csv_to_activitynet", ["from-csv", "l.csv", "-o", "a.json"], "rerun"),
    ("make-demo-dataset", "tal_common.demo_cli.make_demo_dataset", ["-o", "d"], "rerun the same command"),
    ("python -m eval.chance", "eval.chance.read_annotations",
     ["--dataset", "hacs", "--annotations", "g.json", "-o", "r.json"], "rerun the same command"),
]


@pytest.mark.parametrize("tool, target, argv, advice", INTERRUPTS, ids=[f"{t} {a[0]}" for t, _, a, _ in INTERRUPTS])
def test_ctrl_c_is_one_line_and_exit_130(tool, target, argv, advice, monkeypatch, capsys):
    monkeypatch.setattr(target, _raise_interrupt)
    assert MAINS[tool](argv) == 130
    err = capsys.readouterr().err
    prog = tool.split()[-1] if tool.startswith("python") else tool
    assert len(err.splitlines()) == 1 and err.startswith(f"{prog}: interrupted; ") and advice in err, err


def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _default_sigint() -> None:
    """In the child: SIGINT handled by default, even when pytest runs as a background job (which ignores it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_to_a_training_run_prints_one_line_and_exits_130(tmp_path):
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the same here."""
    features, annotations = make_hacs(tmp_path / "data", n_train=6, n_val=2)
    run = tmp_path / "run"
    argv = ["--config", "demo_bmn", "--features", str(features), "--annotations", str(annotations), "--work-dir", str(run),
            "--set", "data.tscale=16", "--set", "data.dscale=16", "--set", "model.num_samples=4",
            "--set", "train.epochs=100000", "--set", "train.lr_steps=[]", "--workers", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "localization.train_cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        metrics = run / "metrics.jsonl"
        _wait_for(lambda: metrics.is_file() and metrics.read_text().count("\n") >= 2, proc, 90)  # DataLoader workers up
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("train-localizer: interrupted; ") and "--resume" in last and str(run) in last
    assert (run / "checkpoints" / "last.pt").is_file()


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_inspect_into_a_closed_pipe_ends_quietly(tmp_path, unbuffered):
    """Buffered, the closed pipe shows at the final flush; unbuffered, at the first print: both end quietly."""
    features, _ = make_hacs(tmp_path, n_train=2, n_val=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env.update({"PYTHONPATH": str(ROOT), **({"PYTHONUNBUFFERED": "1"} if unbuffered else {})})
    command = [sys.executable, "-m", "feature_extraction.cli", "inspect", str(features)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # the reader is gone before the first write: every write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141 and err == "", err
    piped = subprocess.run(["bash", "-c", f"{shlex.join(command)} | head -1; echo \"status ${{PIPESTATUS[0]}}\""],
                           capture_output=True, text=True, env=env, timeout=60)
    assert piped.stdout.splitlines()[0] == f"file:      {features}"
    assert piped.stdout.splitlines()[1] in ("status 0", "status 141") and piped.stderr == "", piped.stderr


# --------------------------------------------------------------------------- point 4: ordinary mistakes, no tracebacks

def test_a_bad_sample_fps_names_the_key_before_any_work(tmp_path, capsys):
    (tmp_path / "v").mkdir()
    out = tmp_path / "f.h5"
    assert extract_cli.main([str(tmp_path / "v"), "-o", str(out), "--preset", "demo", "--set", "sampling.sample_fps=abc"]) == 2
    err = capsys.readouterr().err
    assert "--set sampling.sample_fps=abc: sampling: sample_fps = 'abc' is not a frame rate" in err
    assert not out.with_name("f.h5.parts").exists()
    for bad in ("0", "-30", "30/0"):
        with pytest.raises(ConfigError, match="sample_fps"):
            load_config(ExtractConfig, None, [f"sampling.sample_fps={bad}"])
    assert load_config(ExtractConfig, None, ["sampling.sample_fps=30000/1001"]).sampling.sample_fps == "30000/1001"


def test_a_video_file_given_as_folder_says_so(tmp_path, capsys):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"not decoded")
    assert extract_cli.main([str(video), "-o", str(tmp_path / "f.h5"), "--preset", "demo"]) == 2
    err = capsys.readouterr().err
    assert f"{video}: a file, and extract-features takes folders of videos" in err and repr(str(tmp_path)) in err
    assert "Traceback" not in err


def _identity(*overrides: str) -> dict:
    cfg = resolve_config(load_config(ExtractConfig, None, list(overrides), base=preset_path("demo")), cuda=False)
    return feature_identity(cfg, "")


def test_stale_parts_of_another_config(tmp_path, capsys):
    out, parts = tmp_path / "f.h5", tmp_path / "f.h5.parts"
    old, new = _identity("sampling.stride=4"), _identity()
    # a run that finished no video (it failed at once) does not block the corrected rerun
    extract_cli._prepare_workdir(out, parts, old)
    extract_cli._prepare_workdir(out, parts, new)
    assert "discarding" in capsys.readouterr().err
    assert json.loads((parts / "run.json").read_text()) == new
    # finished videos are kept until --fresh, and the message says what differs and what to do
    (parts / "P01_101.h5").write_bytes(b"part")
    with pytest.raises(ValueError) as refused:
        extract_cli._prepare_workdir(out, parts, old)
    message = str(refused.value)
    assert "1 finished videos" in message and "sampling.stride: 8 -> 4" in message and "--fresh" in message
    assert (parts / "P01_101.h5").is_file()
    extract_cli._prepare_workdir(out, parts, old, fresh=True)
    assert not (parts / "P01_101.h5").exists() and json.loads((parts / "run.json").read_text()) == old
    # the same identity resumes: finished parts stay
    (parts / "P01_101.h5").write_bytes(b"part")
    extract_cli._prepare_workdir(out, parts, old, fresh=True)
    assert (parts / "P01_101.h5").is_file()


def test_train_localizer_device_and_workers_override_the_config(monkeypatch, tmp_path):
    seen = {}

    def fake_train(cfg, *args, **kwargs):
        seen.update(device=cfg.train.device, workers=cfg.data.num_workers)
        return []

    monkeypatch.setattr("localization.train_cli.train", fake_train)
    base = ["--config", "demo_bmn", "--features", "f.h5", "--annotations", "a.json", "--work-dir", str(tmp_path)]
    assert train_cli.main(base) == 0 and seen == {"device": "auto", "workers": 0}
    assert train_cli.main([*base, "--device", "cpu", "--workers", "3"]) == 0 and seen == {"device": "cpu", "workers": 3}
