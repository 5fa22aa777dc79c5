"""Every command ray_cluster.yaml has a node run, run twice, as Ray runs it: each must exit 0 both
times and leave the node's home exactly as the first run left it. A second `ray up` reruns them
(whenever the file or the checkout changed), and so does the autoscaler on every running worker.

How Ray 2.60 runs them (ray/autoscaler/_private: updater.py, command_runner.py, commands.py,
v2/instance_manager/ray_installer.py), copied here with Ray's own helpers:

- ``initialization_commands`` on the host, over ssh, as ``bash --login -c -i 'source ~/.bashrc;
  export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore && (CMD)'``; a worker's get ``export
  RAY_HEAD_IP=...;`` in front;
- setup and start commands in the container (``docker exec ... /bin/bash -c``) in the same wrapper,
  after Ray replaced every ``~/`` in them with the container's home; a worker's setup and start
  commands get ``RAY_HEAD_IP`` (and the start commands Ray's resource and instance variables).

Here each "machine" is a scratch home (a host's, the head container's, a worker container's) with a
``.bashrc`` and ``.profile`` like the image's (Ubuntu's /etc/skel). All shell logic runs for real:
bash with its login and interactive start-up, grep, printf, umask, chmod, mkdir, mv, awk, and python
(the secret parsing, with a stand-in ``boto3`` that returns a fixed secret). Stand-ins (``STUBS``,
first on PATH) take the programs that need AWS, Docker, root, NFS or a running cluster:

=============  =========================================================================================
``aws``        ``aws ecr get-login-password`` prints a fake password (initialization_commands)
``docker``     ``docker login`` reads it from stdin (initialization_commands)
``sudo``       logs instead of running as root: ``apt-get install nfs-common`` puts a ``mount.nfs4`` on
               PATH, ``mount`` marks /mnt/efs mounted (initialization_commands)
``mountpoint`` answers from that mark (initialization_commands)
``hostname``   ``hostname -I`` prints the head's private IP (setup_commands, on the head)
``ray``        ``ray stop`` / ``ray start`` log their arguments and the auth settings they see
``depthtune``  ``depthtune serve stop|start`` logs its arguments and which secrets it sees
``boto3``      Secrets Manager's ``get_secret_value`` (python module on PYTHONPATH; setup_commands,
               head_setup_commands)
=============  =========================================================================================

Run with ``-s`` to see, per command, which stand-ins it called. The last test checks the image's
layout the same way: where the checkout is mounted, scripts run from ~ import the package.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import AWS_EFS_MOUNT_OPTIONS

pytest.importorskip("ray")
from ray.autoscaler._private.command_runner import _with_environment_variables, _with_interactive  # noqa: E402
from ray.autoscaler._private.util import prepare_config, with_envs, with_head_node_ip  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CLUSTER_FILE = REPO / "ray_cluster.yaml"
HEAD_IP = "10.0.1.23"
SECRET = {
    "MLFLOW_TRACKING_USERNAME": "depthtune-admin",
    "MLFLOW_TRACKING_PASSWORD": 'it\'s a $secret `pw` "quoted"',
    "RAY_AUTH_TOKEN": "0f" * 32,
    "DEPTHTUNE_DB_PASSWORD": "db-password-0123",
    "DEPTHTUNE_DB_HOST": "depthtune.abc123.us-west-2.rds.amazonaws.com",
}
# The one value a user SETs that the commands check themselves (setup stops while it says YOUR-BUCKET).
PLACEHOLDERS = {"s3://YOUR-BUCKET/": "s3://test-bucket/"}

SKEL_BASHRC = """# ~/.bashrc: executed by bash(1) for non-login shells.
# If not running interactively, don't do anything
case $- in
    *i*) ;;
      *) return;;
esac
HISTCONTROL=ignoreboth
"""
SKEL_PROFILE = """# ~/.profile: executed by the command interpreter for login shells (as /etc/skel has it)
PATH="{stubs}:$PATH"  # the test's stand-ins first; everything else is the machine's
if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then
    . "$HOME/.bashrc"
fi
"""
# One line per call, written at once (the two sides of a pipe run at the same time): the program and
# its arguments, space-separated (none of the arguments has a space).
LOG_CALL = 'line="{name}"; for arg in "$@"; do line="$line $arg"; done; printf "%s\\n" "$line" >> "{log}"\n'
STUBS = {
    "aws": """
if [ "$1 $2" = "ecr get-login-password" ]; then echo fake-ecr-password; exit 0; fi
echo "aws stand-in: unexpected call: $*" >&2; exit 1
""",
    "docker": """
if [ "$1" = login ]; then [ "$(cat)" = fake-ecr-password ] || exit 1; echo "Login Succeeded"; exit 0; fi
echo "docker stand-in: unexpected call: $*" >&2; exit 1
""",
    "sudo": """
case " $* " in
  *" apt-get install "*nfs-common*)
    printf '#!/bin/sh\\nexit 0\\n' > "{stubs}/mount.nfs4" && chmod +x "{stubs}/mount.nfs4";;
  " mount "*) touch "{state}/efs-mounted";;
esac
exit 0
""",
    "mountpoint": """
[ "$2" = /mnt/efs ] && [ -e "{state}/efs-mounted" ]
""",
    "hostname": """
if [ "$1" = -I ]; then echo "{head_ip} 172.17.0.1 "; exit 0; fi
echo "hostname stand-in: unexpected call: $*" >&2; exit 1
""",
    "ray": """
echo "  sees RAY_AUTH_MODE=$RAY_AUTH_MODE RAY_AUTH_TOKEN=${{RAY_AUTH_TOKEN:+set}}" \\
     "token-file=$(stat -c %a ~/.ray/auth_token 2>/dev/null)" >> "{log}"
""",
    "depthtune": """
echo "  sees DEPTHTUNE_DB_PASSWORD=${{DEPTHTUNE_DB_PASSWORD:+set}}" \\
     "MLFLOW_TRACKING_USERNAME=$MLFLOW_TRACKING_USERNAME" \\
     "MLFLOW_TRACKING_PASSWORD=${{MLFLOW_TRACKING_PASSWORD:+set}}" >> "{log}"
""",
}
FAKE_BOTO3 = """import json, os


class _SecretsManager:
    def get_secret_value(self, SecretId):
        assert SecretId == os.environ["DEPTHTUNE_SECRET_ID"], SecretId
        with open(os.environ["FAKE_BOTO3_LOG"], "a") as log:
            log.write("boto3 secretsmanager get_secret_value " + SecretId + "\\n")
        return {"SecretString": os.environ["FAKE_SECRET"]}


def client(service):
    assert service == "secretsmanager", service
    return _SecretsManager()
"""


class Machine:
    """A scratch home that commands run in as Ray runs them (on a host, or in a container)."""

    def __init__(self, root: Path, name: str, in_container: bool):
        self.name = name
        self.in_container = in_container
        self.home = root / name
        self.home.mkdir()
        self.stubs = root / f"{name}-stubs"
        self.state = root / f"{name}-state"
        self.log = root / f"{name}-calls.log"
        for folder in (self.stubs, self.state, root / "python"):
            folder.mkdir(exist_ok=True)
        self.log.touch()
        (self.home / ".bashrc").write_text(SKEL_BASHRC)
        (self.home / ".profile").write_text(SKEL_PROFILE.format(stubs=self.stubs))
        values = {"stubs": self.stubs, "state": self.state, "log": self.log, "head_ip": HEAD_IP}
        for stub, body in STUBS.items():
            path = self.stubs / stub
            path.write_text("#!/bin/bash\n" + LOG_CALL.format(name=stub, log=self.log) + body.format(**values))
            path.chmod(0o755)
        python = self.stubs / "python"
        python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        python.chmod(0o755)
        (root / "python" / "boto3.py").write_text(FAKE_BOTO3)
        self.env = {
            "HOME": str(self.home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(root / "python"),
            "FAKE_SECRET": json.dumps(SECRET),
            "FAKE_BOTO3_LOG": str(self.log),
            "LANG": "C.UTF-8",
        }

    def wrap(self, command: str, environment_variables: dict | None = None) -> str:
        """The string Ray hands to ``/bin/bash -c`` (after ssh, or after ``docker exec``)."""
        if environment_variables:
            command = _with_environment_variables(command, environment_variables)
        if self.in_container:  # DockerCommandRunner._docker_expand_user(cmd, any_char=True)
            command = command.replace("~/", f"{self.home}/")
        return " ".join(_with_interactive(command))

    def run(self, command: str, environment_variables: dict | None = None) -> tuple[subprocess.CompletedProcess, list]:
        """Run one command; returns the result and the stand-in calls it made."""
        before = self.log.read_text().splitlines()
        result = subprocess.run(
            ["/bin/bash", "-c", self.wrap(command, environment_variables)],
            env=self.env,
            cwd=self.home,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        calls = self.log.read_text().splitlines()[len(before) :]
        return result, calls

    def snapshot(self) -> dict[str, tuple[str, bytes | None]]:
        """Every file and folder under the home: permissions and contents."""
        found = {}
        for path in sorted(self.home.rglob("*")):
            relative = str(path.relative_to(self.home))
            if relative == ".bash_history":  # interactive bash's own, not the commands'
                continue
            mode = oct(stat.S_IMODE(path.lstat().st_mode))
            found[relative] = (mode, path.read_bytes() if path.is_file() else None)
        return found


def cluster_config() -> dict:
    """The config as `ray up` prepares it: common setup_commands merged into head/worker setup."""
    text = CLUSTER_FILE.read_text()
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return prepare_config(yaml.safe_load(text))


def node_commands(config: dict) -> dict[str, list[tuple[str, str, dict | None]]]:
    """Per machine, the commands in Ray's order, with what Ray puts in front of them: (the command as
    the file has it, with Ray's exports in front, Ray's environment variables)."""
    head_type, worker_type = config["head_node_type"], "gpu_a10g"
    head_start = with_envs(
        config["head_start_ray_commands"],
        {"RAY_enable_autoscaler_v2": "1", "RAY_CLOUD_INSTANCE_ID": "i-0head", "RAY_NODE_TYPE_NAME": head_type},
    )
    worker_start = with_envs(
        config["worker_start_ray_commands"],
        {
            "RAY_HEAD_IP": HEAD_IP,
            "RAY_CLOUD_INSTANCE_ID": "i-0worker",
            "RAY_NODE_TYPE_NAME": worker_type,
            "RAY_CLOUD_INSTANCE_TYPE_NAME": config["available_node_types"][worker_type]["node_config"]["InstanceType"],
        },
    )
    head_variables = {"RAY_USAGE_STATS_ENABLED": 0, "RAY_OVERRIDE_RESOURCES": {"CPU": 0}}
    worker_variables = {"RAY_OVERRIDE_RESOURCES": config["available_node_types"][worker_type]["resources"]}
    init, head_setup, worker_setup = (
        config["initialization_commands"],
        config["head_setup_commands"],
        config["worker_setup_commands"],
    )
    return {
        "head-host": [(c, c, None) for c in init],
        "worker-host": list(zip(init, with_head_node_ip(init, HEAD_IP), [None] * len(init))),
        "head": [(c, c, None) for c in head_setup]
        + [(c, wrapped, head_variables) for c, wrapped in zip(config["head_start_ray_commands"], head_start)],
        "worker": list(zip(worker_setup, with_head_node_ip(worker_setup, HEAD_IP), [None] * len(worker_setup)))
        + [(c, wrapped, worker_variables) for c, wrapped in zip(config["worker_start_ray_commands"], worker_start)],
    }


def run_twice(machine: Machine, commands: list[tuple[str, str, dict | None]]) -> list[dict]:
    """Run the whole sequence twice; returns per run the home's snapshot and each command's calls."""
    runs = []
    for attempt in (1, 2):
        calls = []
        for _, command, variables in commands:
            result, stand_ins = machine.run(command, variables)
            assert result.returncode == 0, (
                f"{machine.name}, run {attempt}: exit {result.returncode}\n{command}\n{result.stderr[-3000:]}"
            )
            calls.append(stand_ins)
        runs.append({"home": machine.snapshot(), "calls": calls})
    print(f"\n{machine.name}: {len(commands)} commands, each run twice [stand-ins it called]")
    for (original, _, _), first, second in zip(commands, runs[0]["calls"], runs[1]["calls"]):
        used = sorted({call.split()[0] for call in first + second if not call.startswith(" ")})
        print(f"  [{', '.join(used) or 'none'}] {original[:110]}")
    return runs


@pytest.fixture(scope="module")
def config() -> dict:
    return cluster_config()


@pytest.mark.parametrize("host", ["head-host", "worker-host"])
def test_initialization_commands_run_twice_mount_and_install_once(tmp_path, config, host):
    machine = Machine(tmp_path, host, in_container=False)
    first, second = run_twice(machine, node_commands(config)[host])
    assert first["home"] == second["home"]
    efs, login = first["calls"]
    assert any(call.startswith("sudo apt-get install") and "nfs-common" in call for call in efs)
    (mount,) = [call for call in efs if call.startswith("sudo mount ")]
    options = mount.split(" -o ", 1)[1].split()[0].split(",")
    assert set(options) == AWS_EFS_MOUNT_OPTIONS
    assert mount.endswith(".efs.us-west-2.amazonaws.com:/ /mnt/efs")
    # the second time: already installed and mounted, only the idempotent steps again
    assert second["calls"][0] == [
        "sudo mkdir -p /mnt/efs",
        "mountpoint -q /mnt/efs",
        "sudo mkdir -p /mnt/efs/depthtune",
        "sudo chown 1000:1000 /mnt/efs/depthtune",
    ]
    for run in (first, second):  # the ECR login, every time initialization runs
        assert sorted(call.split()[:2] for call in run["calls"][1]) == [["aws", "ecr"], ["docker", "login"]]


def test_head_setup_and_start_commands_run_twice_with_the_same_result(tmp_path, config):
    head = Machine(tmp_path, "head", in_container=True)
    first, second = run_twice(head, node_commands(config)["head"])
    assert first["home"] == second["home"], "a second run changed the head's home"
    assert first["calls"] == second["calls"], "a second run called the stand-ins differently"
    home = first["home"]

    bashrc = home[".bashrc"][1].decode()
    hook = f"[ -f {head.home}/.depthtune.env ] && . {head.home}/.depthtune.env\n"
    assert bashrc == hook + SKEL_BASHRC, "the hook once, first, before the non-interactive return"
    for private in (".depthtune.env", ".ray/auth_token", ".depthtune-db.env"):
        assert home[private][0] == "0o600", private
    assert home[".ray/auth_token"][1].decode() == SECRET["RAY_AUTH_TOKEN"]
    env = home[".depthtune.env"][1].decode()
    assert (
        f"export MLFLOW_TRACKING_URI=http://{HEAD_IP}:5000\n" in env and f"export RAY_ADDRESS={HEAD_IP}:6379\n" in env
    )
    assert "RAY_AUTH_TOKEN" not in env and "DEPTHTUNE_DB_PASSWORD" not in env
    assert "DEPTHTUNE_DB_PASSWORD" in home[".depthtune-db.env"][1].decode()

    start = [call for calls in first["calls"] for call in calls if call.startswith(("depthtune", "ray", "  sees"))]
    serve = start[start.index(next(c for c in start if c.startswith("depthtune serve start"))) :]
    assert f"--backend-store-uri postgresql://mlflow@{SECRET['DEPTHTUNE_DB_HOST']}:5432/mlflow" in serve[0]
    assert "--artifacts-destination s3://test-bucket/depthtune/mlflow-artifacts" in serve[0]
    assert f"--host {HEAD_IP}" in serve[0] and f"--state-dir {head.home}/depthtune-server" in serve[0]
    assert "DEPTHTUNE_DB_PASSWORD=set" in serve[1] and "MLFLOW_TRACKING_PASSWORD=set" in serve[1]
    (ray_start,) = [i for i, call in enumerate(start) if call.startswith("ray start")]
    assert (
        "--head" in start[ray_start]
        and f"--autoscaling-config={head.home}/ray_bootstrap_config.yaml" in start[ray_start]
    )
    assert start[ray_start + 1].split() == ["sees", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=", "token-file=600"]


def test_worker_setup_and_start_commands_run_twice_with_the_same_result(tmp_path, config):
    worker = Machine(tmp_path, "worker", in_container=True)
    first, second = run_twice(worker, node_commands(config)["worker"])
    assert first["home"] == second["home"], "a second run changed the worker's home"
    assert first["calls"] == second["calls"]
    home = first["home"]
    assert ".depthtune-db.env" not in home, "the database password is the head's alone"
    assert home[".ray/auth_token"] == ("0o600", SECRET["RAY_AUTH_TOKEN"].encode())
    assert f"export RAY_ADDRESS={HEAD_IP}:6379\n" in home[".depthtune.env"][1].decode()
    calls = [call for calls in first["calls"] for call in calls]
    assert not any(call.startswith("hostname") for call in calls), "a worker takes the head's IP from Ray"
    (ray_start,) = [i for i, call in enumerate(calls) if call.startswith("ray start")]
    assert f"--address={HEAD_IP}:6379" in calls[ray_start]
    assert calls[ray_start + 1].split() == ["sees", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN=", "token-file=600"]


# The .bashrc line as the issue found it: `grep || {...} > new && mv` parses as `(grep || ...) && mv`.
UNGROUPED_BASHRC_LINE = yaml.safe_load("""
- >-
  grep -qF '.depthtune.env' ~/.bashrc ||
  { echo '[ -f ~/.depthtune.env ] && . ~/.depthtune.env'; cat ~/.bashrc; } > ~/.bashrc.new &&
  mv ~/.bashrc.new ~/.bashrc
""")[0]


def test_the_harness_catches_a_command_that_fails_when_run_again(tmp_path):
    machine = Machine(tmp_path, "head", in_container=True)
    first, _ = machine.run(UNGROUPED_BASHRC_LINE)
    second, _ = machine.run(UNGROUPED_BASHRC_LINE)
    assert first.returncode == 0
    assert second.returncode == 1 and "bashrc.new" in second.stderr


# What a script on a node must find: the package's own __init__.py (where depthtune.load_model is),
# not a namespace package made of a folder named depthtune (whose submodules the editable install's
# finder still supplies, so only the package's attributes go missing).
IMPORT_CHECK = "import depthtune, depthtune.cli\nassert 'load_model' in depthtune.__all__, depthtune\n"


def _python(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _image_home(root: Path, checkout: str) -> Path:
    """The image's /home/ray under ``root``, with the checkout (a link to this repository) at ``checkout``."""
    home = root / "home" / "ray"
    home.mkdir(parents=True)
    (root / checkout.lstrip("/")).symlink_to(REPO, target_is_directory=True)
    (home / "submitted.py").write_text(IMPORT_CHECK)
    return home


def test_scripts_in_home_and_shells_in_the_workdir_import_the_package(tmp_path):
    """The image's layout: `ray submit` copies a script to ~ and runs `python ~/script.py`; `ray
    attach` shells and `ray exec` start in the image's last WORKDIR, the checkout. Both must import
    the installed package, which a folder ~/depthtune would shadow as a namespace package."""
    (checkout,) = yaml.safe_load(CLUSTER_FILE.read_text())["file_mounts"]
    workdirs = [
        line.split()[1]
        for line in (REPO / "docker" / "Dockerfile").read_text().splitlines()
        if line.startswith("WORKDIR ")
    ]
    assert workdirs[-1] == checkout, "shells start in the checkout"
    home = _image_home(tmp_path / "image", checkout)
    submitted = _python([str(home / "submitted.py")], cwd=home)
    assert submitted.returncode == 0, submitted.stderr
    shell = _python(["-c", IMPORT_CHECK], cwd=tmp_path / "image" / checkout.lstrip("/"))
    assert shell.returncode == 0, shell.stderr

    # The layout before: the checkout at ~/depthtune. With an editable install (as in the image: its
    # finder comes after Python's path search), a script in ~ then gets the folder as a namespace package.
    if not any("__editable__" in getattr(finder, "__module__", "") for finder in sys.meta_path):
        pytest.skip("depthtune is not installed in editable mode here, so the old layout's failure cannot show")
    old_home = _image_home(tmp_path / "old-image", "/home/ray/depthtune")
    old = _python([str(old_home / "submitted.py")], cwd=old_home)
    assert old.returncode != 0 and "AttributeError: module 'depthtune' has no attribute '__all__'" in old.stderr
