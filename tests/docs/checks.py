"""How each kind of documentation block is checked (used by test_snippets.py).

Every check returns a list of problems (strings) instead of raising, so one test run
reports every stale snippet of a page at once.

- Manifests (TOML, YAML, JSON; `[tool.palfrey]` TOML as a pyproject.toml) are validated
  against schemas/palfrey.schema.json with jsonschema and loaded by `load_config` exactly
  as `palfrey --config` would; `invalid` ones must be refused.
- `palfrey` command lines (in shell and console blocks, systemd units, Dockerfiles and
  Kubernetes objects) are parsed and validated by the real CLI. When every file they name
  is one the test can provide (TLS files are generated with trustme, the app is the
  quickstart's main.py), they also run `--check-config`, which loads the TLS files and
  imports the app.
- Console transcripts (`$ command` lines with output) run for real in bash, in the page's
  scratch directory, when every command in them terminates; the output shown must match
  (a line `...` stands for any number of lines).
- Python blocks are compiled; `run` ones are executed.
- dotenv blocks are loaded as the environment layer; `pip install` lines must name
  extras that exist; gunicorn `-k` worker classes must import.
"""

from __future__ import annotations

import configparser
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import trustme
import yaml
from dotenv import dotenv_values
from jsonschema import Draft202012Validator

from palfrey.config import ConfigError, resolve
from tests.docs.snippets import ROOT, Block, Command, logical_lines, shell_commands, transcript

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

BIN = Path(sys.executable).parent
SCHEMA = json.loads((ROOT / "schemas" / "palfrey.schema.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA)
STANDALONE = frozenset({"--print-schema", "--version", "--help", "-h"})
TERMINATING = STANDALONE | {"--check-config", "--print-config"}
# Commands a transcript may contain and still be run for real: they touch nothing outside
# the scratch directory and end by themselves.
TRANSCRIPT_PROGRAMS = frozenset(
    {"palfrey", "echo", "cat", "ls", "grep", "head", "tail", "mkdir", "printf", "export"}
)
MANIFEST_SUFFIX = {"toml": ".toml", "yaml": ".yaml", "yml": ".yaml", "json": ".json"}
# Options naming paths on the server: a command naming one outside the page's scratch
# directory (/etc/..., /run/...) is validated but not --check-config'ed.
FILE_OPTIONS = (
    ("tls", "certfile"),
    ("tls", "keyfile"),
    ("tls", "ca_certs"),
    ("tls", "keyfile_password_file"),
    ("logging", "config"),
    ("server", "uds"),
    ("reload", "dirs"),
    ("app_dir",),
)
WORKLOADS = frozenset({"Deployment", "Pod", "StatefulSet", "DaemonSet", "Job", "CronJob"})


def extras() -> set[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return set(data["project"]["optional-dependencies"])


# -- the scratch directory of a page ------------------------------------------------------


class Scratch:
    """A page's working directory: the files its blocks write, the quickstart app, TLS
    files generated on demand, and links to the repository's examples and schema."""

    def __init__(self, path: Path, app_source: str, ca: trustme.CA) -> None:
        self.path = path
        self.app_source = app_source
        self.ca = ca
        path.mkdir(parents=True, exist_ok=True)
        (path / "main.py").write_text(app_source, encoding="utf-8")
        for name in ("examples", "schemas"):
            (path / name).symlink_to(ROOT / name)

    def write(self, name: str, text: str) -> Path:
        """Write a page's file; an absolute path (/etc/palfrey/...) lands under root/."""
        target = self.path / "root" / name.lstrip("/") if name.startswith("/") else self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        return target

    def mapped(self, value: str) -> str:
        """An absolute path a page wrote (see write) as its place in the scratch root."""
        if value.startswith("/"):
            target = self.path / "root" / value.lstrip("/")
            if target.exists():
                return str(target)
        return value

    def inside(self, value: Any) -> Path | None:
        """The path a relative (or scratch-absolute) file option points to, else None."""
        path = Path(str(value))
        target = path if path.is_absolute() else self.path / path
        try:
            target.resolve().relative_to(self.path.resolve())
        except ValueError:
            return None
        return target

    def provide_tls(self, config: Any) -> None:
        """Generate the TLS files the config names and that do not exist yet."""
        tls = config.tls
        if tls.certfile is None:
            return
        server = self.ca.issue_cert("localhost", "127.0.0.1", "::1")
        key = server.private_key_pem.bytes()
        chain = server.cert_chain_pems[0].bytes() + (b"" if tls.keyfile else key)
        for value, data in ((tls.certfile, chain), (tls.keyfile, key), (tls.ca_certs, None)):
            target = self.inside(value) if value is not None else None
            if target is not None and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data if data is not None else self.ca.cert_pem.bytes())

    def provide_app(self, app: str | None) -> None:
        """A module for the command's import string, serving the quickstart app."""
        if not app or ":" not in app:
            return
        module, _, attr = app.partition(":")
        parts = module.split(".")
        target = self.path.joinpath(*parts).with_suffix(".py")
        if target.exists() or (self.path / parts[0]).is_symlink():
            return
        for depth in range(1, len(parts)):
            package = self.path.joinpath(*parts[:depth])
            package.mkdir(exist_ok=True)
            (package / "__init__.py").touch()
        name = attr.split(".")[0]
        target.write_text(f"{self.app_source}\n{name} = app\n", encoding="utf-8")


@contextlib.contextmanager
def isolated(cwd: Path, env: Mapping[str, str]) -> Iterator[None]:
    """Run Palfrey in-process as if started in `cwd` with `env` added to a clean
    environment; imports made from `cwd` are forgotten afterwards."""
    saved_env = dict(os.environ)
    saved_path = list(sys.path)
    saved_modules = set(sys.modules)
    saved_cwd = os.getcwd()
    for name in list(os.environ):
        if name.startswith(("PALFREY_", "UVICORN_")) or name in ("WEB_CONCURRENCY",):
            del os.environ[name]
    os.environ.update(env)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        for name in set(sys.modules) - saved_modules:
            # Only the page's own modules (main.py ...): library modules imported for the
            # first time must stay, or their classes would exist twice.
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if origin.startswith((str(cwd), os.path.realpath(cwd))):
                del sys.modules[name]


def run_cli(args: list[str], env: Mapping[str, str], cwd: Path) -> tuple[int, str]:
    """`palfrey ARGS` in this process (only for commands that end by themselves)."""
    from palfrey.cli import main

    out = io.StringIO()
    with isolated(cwd, env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main(args)
        except SystemExit as exc:  # argparse's --help
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()


# -- manifests ---------------------------------------------------------------------------


def parse_manifest(lang: str, text: str) -> tuple[Any, str]:
    """(data, file name to load it from); a [tool.palfrey] TOML is a pyproject.toml."""
    if lang == "toml":
        data = tomllib.loads(text)
        if "tool" in data:
            return data["tool"]["palfrey"], "pyproject.toml"
        return data, "palfrey.toml"
    if lang == "json":
        return json.loads(text), "palfrey.json"
    return yaml.safe_load(text), "palfrey.yaml"


def check_manifest(block: Block, text: str, scratch: Path, lang: str | None = None) -> list[str]:
    lang = lang or block.lang
    invalid = "invalid" in block.marker
    try:
        data, name = parse_manifest(lang, text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        return [] if invalid else [f"does not parse as {lang}: {exc}"]
    if data is None:
        data = {}  # a YAML file holding only comments: Palfrey reads it as empty
    problems = []
    if not invalid:
        problems += [
            f"schema: {'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in VALIDATOR.iter_errors(data)
        ]
    folder = scratch / ".manifests" / str(block.line)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (block.file.rsplit("/", 1)[-1] if block.file else name)
    path.write_text(text, encoding="utf-8")
    try:
        with isolated(scratch, {}):
            resolve(["--config", str(path)], environ={})
    except ConfigError as exc:
        if not invalid:
            problems.append(f"load_config refused it:\n{exc.render()}")
    else:
        if invalid:
            problems.append("marked invalid, but load_config accepted it")
    return problems


# -- commands ----------------------------------------------------------------------------


def check_command(cmd: Command, scratch: Scratch, extra_env: Mapping[str, str] = ()) -> list[str]:
    """Check one simple command of a shell line; most programs are only shown."""
    env = {**dict(extra_env), **cmd.env}
    args = cmd.palfrey_args
    if args is not None:
        return check_palfrey(args, env, scratch)
    if cmd.program in ("pip", "pip3") or cmd.argv[1:3] == ["-m", "pip"]:
        return check_pip(cmd.argv)
    if cmd.program == "gunicorn":
        return check_gunicorn(cmd.argv) + check_env(env, scratch)
    return []


def check_env(env: Mapping[str, str], scratch: Scratch) -> list[str]:
    """The PALFREY_* variables a non-Palfrey command line sets (gunicorn's workers read
    them), validated as the environment layer."""
    palfrey = {k: scratch.mapped(v) for k, v in env.items() if k.startswith("PALFREY_")}
    if not palfrey:
        return []
    if not Path(palfrey.get("PALFREY_CONFIG", "/")).is_absolute():
        palfrey["PALFREY_CONFIG"] = str(scratch.path / palfrey["PALFREY_CONFIG"])
    try:
        with isolated(scratch.path, {}):
            resolve([], environ=palfrey)
    except ConfigError as exc:
        return [f"the environment {palfrey} is refused:\n{exc.render()}"]
    return []


def check_palfrey(args: list[str], env: dict[str, str], scratch: Scratch) -> list[str]:
    where = f"palfrey {' '.join(args)}"
    args = [scratch.mapped(arg) for arg in args]
    env = {name: scratch.mapped(value) for name, value in env.items()}
    if any("$" in arg for arg in args) or any("$" in v for v in env.values()):
        return [f"{where}: uses shell variables, which the test cannot resolve; spell them out"]
    if STANDALONE & set(args):
        code, output = run_cli(args, env, scratch.path)
        return [] if code == 0 else [f"{where} exited {code}:\n{output}"]
    try:
        with isolated(scratch.path, env):
            config = resolve(args, environ=os.environ).config
    except ConfigError as exc:
        return [f"{where}: the CLI refused it:\n{exc.render()}"]
    named = [_get(config, path) for path in FILE_OPTIONS]
    paths = [v for value in named for v in (value if isinstance(value, tuple) else [value])]
    if any(value and scratch.inside(value) is None for value in paths):
        return []  # names files on the server (/etc/...): validated, not --check-config'ed
    scratch.provide_tls(config)
    scratch.provide_app(config.app)
    check = [] if TERMINATING & set(args) else ["--check-config"]
    code, output = run_cli([*args, *check], env, scratch.path)
    if code != 0:
        return [f"{where} {' '.join(check)} exited {code}:\n{output}"]
    return []


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        config = getattr(config, part)
    return config


def check_pip(argv: list[str]) -> list[str]:
    known = extras()
    problems = []
    for arg in argv:
        if "[" in arg and (arg.startswith(("palfrey[", ".[")) or "palfrey[" in arg):
            names = arg.split("[", 1)[1].rstrip("]").split(",")
            problems += [f"pip: no extra {n!r} in pyproject.toml" for n in names if n not in known]
    return problems


def check_gunicorn(argv: list[str]) -> list[str]:
    import importlib
    import warnings

    for flag, value in itertools.pairwise(argv):
        if flag in ("-k", "--worker-class"):
            module, _, name = value.rpartition(".")
            try:
                with warnings.catch_warnings():  # uvicorn.workers, in a "before" example
                    warnings.simplefilter("ignore", DeprecationWarning)
                    getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                return [f"gunicorn worker class {value}: {exc}"]
    return []


def check_shell(block: Block, scratch: Scratch) -> list[str]:
    return [p for cmd in shell_commands(block.text) for p in check_command(cmd, scratch)]


# -- console transcripts ------------------------------------------------------------------


def check_console(block: Block, scratch: Scratch) -> list[str]:
    steps = transcript(block.text)
    problems = []
    runnable = True
    for step in steps:
        for cmd in shell_commands(step.command):
            args = cmd.palfrey_args
            if cmd.program not in TRANSCRIPT_PROGRAMS and args is None:
                runnable = False
            elif args is None or "run" in block.marker:
                continue  # `run`: the page says these commands end by themselves
            elif not (TERMINATING & set(args)) and not _fails(step.output):
                runnable = False  # it would serve: check it instead of running it
    if not runnable:
        for step in steps:
            for cmd in shell_commands(step.command):
                problems += check_command(cmd, scratch)
        return problems
    return run_transcript(steps, scratch)


def _fails(output: list[str]) -> bool:
    return bool(output) and output[0].startswith("palfrey: ") and "warning" not in output[0]


def _clean_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PALFREY_", "UVICORN_"))
        and k not in ("WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS", "LISTEN_FDS", "NOTIFY_SOCKET")
    }
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1", COLUMNS="100")
    env["PYTHONUNBUFFERED"] = "1"
    return env


END = "@@docs-step-end"


def run_transcript(steps: list[Any], scratch: Scratch) -> list[str]:
    """Run the steps in one bash (so `echo $?` sees the previous step) and compare each
    step's output with the page's."""
    from tests.docs.snippets import output_matches

    script = ["exec 2>&1"]
    for step in steps:
        script += [step.command, f"__rc=$?; printf '\\n{END} %d\\n' $__rc; (exit $__rc)"]
    result = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=scratch.path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    parts = re.split(rf"\n?{END} (\d+)\n", result.stdout)
    outputs, codes = parts[0::2], [int(code) for code in parts[1::2]]
    problems = []
    for index, step in enumerate(steps):
        if index >= len(codes):
            return [*problems, f"$ {step.command}\ndid not run:\n{result.stdout[-2000:]}"]
        lines = outputs[index].split("\n") if outputs[index] else []
        if lines and lines[-1] == "":
            lines.pop()
        shown = "\n".join(lines)
        if step.output and not output_matches(step.output, lines):
            expected = "\n".join(step.output)
            problems.append(
                f"$ {step.command}\nexpected:\n{expected}\ngot (exit {codes[index]}):\n{shown}"
            )
        elif not step.output and codes[index] != 0:
            problems.append(f"$ {step.command}\nexited {codes[index]}:\n{shown}")
    return problems


# -- other block kinds ---------------------------------------------------------------------


def check_python(block: Block, scratch: Scratch) -> list[str]:
    try:
        compile(block.text, block.id, "exec")
    except SyntaxError as exc:
        return [f"does not compile: {exc}"]
    if "run" not in block.marker:
        return []
    script = scratch.write(f".run-{block.line}.py", block.text)
    try:
        result = subprocess.run(
            [sys.executable, str(script)],
            cwd=scratch.path,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ["did not finish within 60 s"]
    if result.returncode != 0:
        return [f"exited {result.returncode}:\n{result.stdout}{result.stderr}"]
    return []


def check_kubernetes(block: Block, scratch: Scratch) -> list[str]:
    try:
        documents = [d for d in yaml.safe_load_all(block.text) if d is not None]
    except yaml.YAMLError as exc:
        return [f"not YAML: {exc}"]
    problems: list[str] = []
    for document in documents:
        if not isinstance(document, dict):
            continue
        kind = document.get("kind")
        if kind == "ConfigMap":
            for key, value in (document.get("data") or {}).items():
                lang = Path(key).suffix.lstrip(".")
                if lang in MANIFEST_SUFFIX:
                    problems += check_manifest(block, value, scratch.path, lang=lang)
        elif kind in WORKLOADS:
            problems += _check_workload(document, scratch)
    return problems


def _containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {})
    spec = spec.get("jobTemplate", {}).get("spec", spec)
    pod = spec.get("template", {}).get("spec", spec)
    return list(pod.get("containers", [])) + list(pod.get("initContainers", []))


def _check_workload(document: dict[str, Any], scratch: Scratch) -> list[str]:
    problems = []
    for container in _containers(document):
        env = {
            item["name"]: str(item["value"])
            for item in container.get("env", [])
            if item["name"].startswith("PALFREY_") and "value" in item
        }
        # The manifest and secrets live in the pod; the env layer is checked on its own.
        env = {k: v for k, v in env.items() if k not in ("PALFREY_CONFIG", "PALFREY_SECRETS_DIR")}
        argv = [*container.get("command", []), *container.get("args", [])]
        cmd = Command(env, [str(a) for a in argv]) if argv else Command(env, ["palfrey"])
        args = cmd.palfrey_args
        if args is None:
            continue
        try:
            with isolated(scratch.path, env):
                resolve([a for a in args if a not in TERMINATING], environ=os.environ)
        except ConfigError as exc:
            problems.append(f"container {container.get('name')}: {exc.render()}")
    return problems


def check_unit(block: Block, scratch: Scratch) -> list[str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(block.text)
    except configparser.Error as exc:
        return [f"not an INI/systemd unit: {exc}"]
    if not parser.has_section("Service"):
        return []
    service = parser["Service"]
    env: dict[str, str] = {}
    for item in shell_commands(service.get("Environment", "")):
        env.update(item.env)
    problems = []
    for line in service.get("ExecStart", "").split("\n"):
        for cmd in shell_commands(line.lstrip("-@+!:")):
            problems += check_command(Command({**env, **cmd.env}, cmd.argv), scratch)
    return problems


def check_dockerfile(block: Block, scratch: Scratch) -> list[str]:
    env: dict[str, str] = {}
    problems = []
    for line in logical_lines(block.text):
        word, _, rest = line.strip().partition(" ")
        if word == "ENV":
            for cmd in shell_commands(rest + " true"):
                env.update(cmd.env)
        elif word == "RUN":
            problems += [
                p
                for cmd in shell_commands(rest)
                if cmd.program.startswith("pip")
                for p in check_command(cmd, scratch)
            ]
        elif word in ("CMD", "ENTRYPOINT") and rest.strip().startswith("["):
            argv = json.loads(rest)
            problems += check_command(Command({}, argv), scratch, env)
    return problems


def check_dotenv(block: Block, scratch: Scratch) -> list[str]:
    values = {k: v for k, v in dotenv_values(stream=io.StringIO(block.text)).items() if v}
    env = {k: v for k, v in values.items() if k not in ("PALFREY_CONFIG", "PALFREY_SECRETS_DIR")}
    try:
        with isolated(scratch.path, {}):
            resolve([], environ=env)
    except ConfigError as exc:
        return [f"as the environment, refused:\n{exc.render()}"]
    return []


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
