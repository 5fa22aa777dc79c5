"""The cluster files, checked statically and offline: ray_cluster.yaml against Ray's own schema and
this project's rules (CPU-only head, GPU workers, tracking server on a private address, the
environment every node needs, no secrets), docker/Dockerfile and .dockerignore by parsing them.

The development machine has no Docker engine and no AWS account, so the image was never built here
and `ray up` never ran: these tests are what can be checked without them (docs/cluster.md).
"""

from __future__ import annotations

import copy
import fnmatch
import re
import shlex
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from conftest import AWS_EFS_MOUNT_OPTIONS
from depthtune.configs import shipped_config

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
CLUSTER_FILE = REPO / "ray_cluster.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"

# A literal value after password/passwd/token and = or :, unless it is an environment reference.
SECRET_ASSIGNMENT = re.compile(r"(?i)\w*(?:password|passwd|token)\w*[\"']?\s*[:=]\s*(?P<value>[^\s,;)}]+)")
AWS_KEY_ID = re.compile(r"AKIA[0-9A-Z]{16}")
SECRETISH_NAME = re.compile(r"(?i)PASSWORD|SECRET|TOKEN|KEY")
# RUN steps that write outside the user's home: they must come before USER.
NEEDS_ROOT = re.compile(r"\b(apt-get|apt|useradd|userdel|groupadd|usermod|chown|pip install|conda install)\b")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def project_version() -> str:
    return pyproject()["project"]["version"]


@pytest.fixture(scope="module")
def raw_cluster() -> dict:
    return yaml.safe_load(CLUSTER_FILE.read_text())


@pytest.fixture(scope="module")
def cluster(raw_cluster) -> dict:
    """The config as `ray up` sees it: Ray's defaults filled in, setup commands merged, validated."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(raw_cluster))
    validate_config(prepared)
    return prepared


def worker_types(config: dict) -> dict[str, dict]:
    return {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}


def literal_secrets(text: str) -> list[str]:
    """Secret-looking literals in ``text``: assignments of passwords/tokens that are not ``$VAR``
    references, AWS access key ids, and AWS secret keys by name."""
    found = []
    for match in SECRET_ASSIGNMENT.finditer(text):
        value = match.group("value").strip("\"'")
        if not value.startswith("$"):
            found.append(match.group(0))
    found += AWS_KEY_ID.findall(text)
    found += re.findall(r"(?i)aws_secret_access_key", text)
    return found


def without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


# --- ray_cluster.yaml ----------------------------------------------------------------------------


def test_cluster_file_passes_rays_schema_offline(cluster):
    assert cluster["provider"]["type"] == "aws"
    assert cluster["cluster_name"] == "depthtune"
    assert cluster["head_node_type"] in cluster["available_node_types"]
    assert "aws_credentials" not in cluster["provider"]


def test_head_runs_no_trials(cluster):
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0
    assert head["resources"].get("GPU", 0) == 0
    assert head["min_workers"] == head["max_workers"] == 0
    assert not head["node_config"]["InstanceType"].startswith(("g", "p")), "the head is a CPU instance"


def test_worker_types_have_gpus_and_sane_bounds(cluster):
    workers = worker_types(cluster)
    assert {"gpu_a10g", "gpu_a100x8"} <= set(workers)
    for name, node_type in workers.items():
        assert node_type["resources"].get("GPU", 0) >= 1, name
        assert node_type["resources"].get("CPU", 0) >= 1, name
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= cluster["max_workers"], name
        assert "IamInstanceProfile" in node_type["node_config"], name
        # a per-type worker_setup_commands would replace the common setup (environment, secrets)
        assert "worker_setup_commands" not in node_type, name
    # two trials per GPU at --gpus-per-trial 0.5 need 2 x cpus_per_trial CPUs per GPU
    cpus_per_trial = yaml.safe_load(shipped_config("net12").read_text())["cpus_per_trial"]
    for name, node_type in workers.items():
        resources = node_type["resources"]
        assert resources["CPU"] >= 2 * cpus_per_trial * resources["GPU"], name


def test_every_node_type_sizes_shm_for_the_object_store(raw_cluster):
    docker = raw_cluster["docker"]
    assert any("--shm-size" in opt for opt in docker["head_run_options"])
    assert any("nofile=65536:65536" in opt for opt in docker["run_options"])
    for name, node_type in worker_types(raw_cluster).items():
        options = node_type.get("docker", {}).get("worker_run_options", [])
        assert any("--shm-size" in opt for opt in options), name
        assert any("--gpus" in opt for opt in options), name


def test_workers_join_the_head(cluster):
    starts = [c for c in cluster["worker_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 1
    assert "--address=$RAY_HEAD_IP:6379" in starts[0]
    assert "--object-manager-port=8076" in starts[0]


def test_head_starts_tracking_server_then_ray_on_private_addresses(cluster):
    commands = cluster["head_start_ray_commands"]
    serve = [c for c in commands if "depthtune serve start" in c]
    ray_start = [c for c in commands if "ray start --head" in c]
    assert len(serve) == 1 and len(ray_start) == 1
    assert commands.index(serve[0]) < commands.index(ray_start[0]), "tracking server first: fail before GPUs start"

    args = shlex.split(serve[0].split("depthtune serve start", 1)[1])
    options = dict(zip(args[::2], args[1::2]))
    assert "--app-name" not in args, "basic-auth is `depthtune serve`'s default"
    assert options["--backend-store-uri"].startswith("postgresql://")
    assert ":5432/mlflow" in options["--backend-store-uri"]
    userinfo = re.sub(r"\$\{[^}]*\}", "USER", options["--backend-store-uri"].split("//", 1)[1]).split("@")[0]
    assert ":" not in userinfo, "no password in the database URI: depthtune serve reads DEPTHTUNE_DB_PASSWORD"
    assert options["--artifacts-destination"].startswith("$")
    assert options["--host"] == "$DEPTHTUNE_HEAD_IP"
    assert options["--port"] == "5000"
    assert "--state-dir" in options
    assert any(c.startswith("depthtune serve stop --state-dir") for c in commands)

    assert "--dashboard-host=127.0.0.1" in ray_start[0]
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in ray_start[0]
    assert "0.0.0.0" not in without_comments(CLUSTER_FILE.read_text())


def test_every_node_gets_tracking_uri_and_storage_path(raw_cluster, cluster):
    common = "\n".join(raw_cluster["setup_commands"])
    assert '"MLFLOW_TRACKING_URI=http://$HEAD_IP:5000"' in common
    assert '"RAY_ADDRESS=$HEAD_IP:6379"' in common
    assert "${RAY_HEAD_IP:-$(hostname -I" in common
    # Tune's storage is the EFS mount every host mounts and every container sees at the same path
    storage = re.search(r"export DEPTHTUNE_STORAGE_PATH=(\S+?)'", common).group(1)
    assert storage.startswith("/mnt/efs/")
    assert "-v /mnt/efs:/mnt/efs" in " ".join(raw_cluster["docker"]["run_options"])
    assert re.search(r"mount -t nfs4 .*:/ /mnt/efs", " ".join(raw_cluster["initialization_commands"]))
    assert re.search(r"export DEPTHTUNE_S3=s3://[^/\s']+/", common)
    assert "MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD" in common
    # prepare_config prepends the common commands to both head and worker setup
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert cluster[key][: len(raw_cluster["setup_commands"])] == raw_cluster["setup_commands"], key
    # the env file is private, and read by the login shells Ray runs commands in
    assert "umask 077" in common and "chmod 600 ~/.depthtune.env" in common
    assert "~/.bashrc" in common
    # the database password goes to its own file, read only by the tracking server's start command
    head = "\n".join(raw_cluster["head_setup_commands"])
    assert "DEPTHTUNE_DB_PASSWORD" in head and "> ~/.depthtune-db.env" in head and "chmod 600" in head
    assert "DEPTHTUNE_DB_PASSWORD" not in common


def test_region_and_registry_agree(raw_cluster):
    region = raw_cluster["provider"]["region"]
    assert f"export AWS_DEFAULT_REGION={region}" in "\n".join(raw_cluster["setup_commands"])
    assert all(zone.startswith(region) for zone in raw_cluster["provider"]["availability_zone"].split(","))
    registry = raw_cluster["docker"]["image"].rsplit("/", 1)[0]
    login = "\n".join(raw_cluster["initialization_commands"])
    assert f"--region {region}" in login and login.rstrip().endswith(registry)


def test_docker_image_follows_the_dockerfile_tag_convention(raw_cluster):
    version = project_version()
    image = raw_cluster["docker"]["image"]
    assert re.fullmatch(rf"[a-z0-9.\-]+(?::\d+)?(?:/[a-z0-9._\-]+)*/depthtune:{re.escape(version)}", image), image
    assert f"-t depthtune:{version}" in DOCKERFILE.read_text()
    # pulled only when the host lacks the tag: a pull on a no-change `ray up` would skip the ECR
    # login of initialization_commands and fail once the host's 12-hour login expired
    assert raw_cluster["docker"]["pull_before_run"] is False
    assert raw_cluster["docker"]["container_name"]


def test_every_node_type_is_pinned_to_the_same_subnets_one_per_zone(raw_cluster):
    zones = raw_cluster["provider"]["availability_zone"].split(",")
    subnets = [t["node_config"].get("SubnetIds") for t in raw_cluster["available_node_types"].values()]
    assert subnets[0] and all(s == subnets[0] for s in subnets), "one VPC: the same subnets for every node type"
    assert len(subnets[0]) == len(set(subnets[0])) == len(zones)
    assert all(s.startswith("subnet-") for s in subnets[0])


def test_efs_is_mounted_with_awss_nfs_options(raw_cluster):
    init = " ".join(raw_cluster["initialization_commands"])
    options = re.search(r"mount -t nfs4 -o (\S+) ", init).group(1).split(",")
    assert set(options) == AWS_EFS_MOUNT_OPTIONS


def test_the_checkout_is_mounted_where_the_image_installed_it(raw_cluster):
    assert raw_cluster["file_mounts"] == {"/home/ray/depthtune-src": "."}
    # the checkout's folder name must not be importable: a ~/depthtune would shadow the package
    assert not Path(next(iter(raw_cluster["file_mounts"]))).name.isidentifier()
    assert dockerfile_instructions_of("WORKDIR")[-1] == "/home/ray/depthtune-src", "shells start in the checkout"
    assert ".gitignore" in raw_cluster["rsync_filter"]
    assert any(".git" in pattern for pattern in raw_cluster["rsync_exclude"])
    assert any('-e ".[cluster]"' in run for run in dockerfile_instructions_of("RUN"))


@pytest.mark.parametrize(
    "text, secret",
    [
        ("password: hunter2", True),
        ("MLFLOW_TRACKING_PASSWORD=abc123", True),
        ('{"DEPTHTUNE_DB_PASSWORD": "s3cr3t"}', True),
        ("aws_access_key_id = AKIAABCDEFGHIJKLMNOP", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ('export MLFLOW_TRACKING_PASSWORD="$PW"', False),
        ("password: ${DB_PASSWORD}", False),
        ("reads DEPTHTUNE_DB_PASSWORD from env", False),
    ],
)
def test_secret_detector(text, secret):
    assert bool(literal_secrets(text)) is secret


@pytest.mark.parametrize("path", [CLUSTER_FILE, DOCKERFILE, DOCKERIGNORE], ids=lambda p: p.name)
def test_no_secrets_in_cluster_files(path):
    assert literal_secrets(path.read_text()) == []


# --- docker/Dockerfile ---------------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs; `\\` continuations joined, comment lines dropped (Docker also
    drops comment lines inside a continuation)."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        instructions.append((keyword.upper(), " ".join(args.split())))
    assert not pending, "Dockerfile ends inside a line continuation"
    return instructions


def dockerfile_instructions_of(keyword: str) -> list[str]:
    return [args for kw, args in parse_dockerfile(DOCKERFILE.read_text()) if kw == keyword]


def env_names(keyword: str, args: str) -> list[str]:
    """Variable names set by one ENV (``A=1 B=2`` or legacy ``A 1``) or ARG (``A`` / ``A=1``)."""
    words = shlex.split(args)
    if keyword == "ENV" and words and "=" not in words[0]:
        return [words[0]]
    return [word.split("=", 1)[0] for word in words]


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a path is excluded when it or one of its parents matches a pattern
    (last match wins, ``!`` re-includes); ``**/`` also matches at the root."""
    parts = Path(path.rstrip("/")).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        variants = {pattern, pattern[3:]} if pattern.startswith("**/") else {pattern}
        if any(fnmatch.fnmatchcase(c, v) for c in candidates for v in variants):
            ignored = not negate
    return ignored


def test_base_image_is_cuda_pytorch_inside_the_supported_torch_range():
    froms = dockerfile_instructions_of("FROM")
    assert len(froms) == 1
    image, _, tag = froms[0].split()[0].partition(":")
    assert image == "pytorch/pytorch"
    torch_version, cuda, cudnn, flavour = tag.split("-")
    assert cuda.startswith("cuda") and cudnn.startswith("cudnn") and flavour == "runtime", tag
    torch_req = next(Requirement(r) for r in pyproject()["project"]["dependencies"] if Requirement(r).name == "torch")
    assert Version(torch_version) in torch_req.specifier, f"{tag}: torch {torch_version} outside {torch_req.specifier}"


def test_runs_as_non_root_user_after_every_root_step():
    instructions = parse_dockerfile(DOCKERFILE.read_text())
    users = [i for i, (kw, _) in enumerate(instructions) if kw == "USER"]
    assert users, "no USER: the container would run as root"
    last_user = users[-1]
    assert instructions[last_user][1].split(":")[0] not in ("root", "0")
    root_runs = [i for i, (kw, args) in enumerate(instructions) if kw == "RUN" and NEEDS_ROOT.search(args)]
    assert root_runs and last_user > root_runs[-1]
    assert any(re.search(r"useradd [^&]*--uid 1000 [^&]* ray\b", args) for kw, args in instructions if kw == "RUN")
    assert [args for kw, args in instructions if kw == "WORKDIR"][-1].startswith("/home/ray/")
    assert any(kw == "ENV" and "HOME=/home/ray" in args for kw, args in instructions), "Ray reads HOME from the image"


def test_no_secret_build_args_or_env():
    for keyword, args in parse_dockerfile(DOCKERFILE.read_text()):
        if keyword in ("ENV", "ARG"):
            for name in env_names(keyword, args):
                assert not SECRETISH_NAME.search(name), f"{keyword} {name}: secrets must not be baked into the image"


def test_pip_and_apt_keep_layers_small():
    runs = dockerfile_instructions_of("RUN")
    pip_runs = [r for r in runs if "pip install" in r]
    assert pip_runs
    for run in pip_runs:
        assert "--no-cache-dir" in run, run
    apt_runs = [r for r in runs if "apt-get install" in r]
    assert apt_runs
    for run in apt_runs:
        assert "apt-get update" in run and "--no-install-recommends" in run, run
        assert "rm -rf /var/lib/apt/lists/*" in run, "apt lists must go in the same layer as the install"
        assert "rsync" in run, "ray up copies file_mounts into the container with rsync"


def test_package_is_installed_keeping_the_images_torch():
    runs = dockerfile_instructions_of("RUN")
    install = [r for r in runs if re.search(r"pip install .*-e \"\.\[cluster\]\"", r)]
    assert len(install) == 1
    assert "-c /tmp/pins.txt" in install[0] and "torch.__version__" in install[0]
    extra = {Requirement(r).name for r in pyproject()["project"]["optional-dependencies"]["cluster"]}
    assert {"boto3", "psycopg2-binary"} <= extra
    assert any("import torch, ray, mlflow, boto3, psycopg2" in r for r in runs)


def pinned_ray_version() -> str:
    (pin,) = re.findall(r'echo "ray==([^"]+)" >> /tmp/pins\.txt', " ".join(dockerfile_instructions_of("RUN")))
    return pin


def test_ray_is_pinned_to_one_version_in_the_image_and_the_laptop_setup():
    pin = pinned_ray_version()
    assert re.fullmatch(r"\d+\.\d+\.\d+", pin), pin
    cluster_extra = next(
        Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["cluster"] if r.startswith("ray")
    )
    assert Version(pin) in cluster_extra.specifier
    runs = " ".join(dockerfile_instructions_of("RUN"))
    assert f"assert ray.__version__ == '{pin}'" in runs, "the build fails if pip resolved another Ray"
    assert f'depthtune.ray.version="{pin}"' in " ".join(dockerfile_instructions_of("LABEL"))
    docs = (REPO / "docs" / "cluster.md").read_text()
    assert f'pip install "ray[default]=={pin}" boto3' in docs
    assert f'"ray[default]=={pin}"' in CLUSTER_FILE.read_text()
    assert not re.search(r"ray\[default\]==(?!" + re.escape(pin) + r")", docs + CLUSTER_FILE.read_text())


def test_the_documented_build_targets_the_nodes_platform():
    for text in (DOCKERFILE.read_text(), (REPO / "docs" / "cluster.md").read_text()):
        builds = re.findall(r"^[#\s]*docker (?:buildx )?build .*$", text, re.MULTILINE)  # commands, not prose
        assert builds and all("--platform linux/amd64" in build for build in builds), builds


def test_label_version_matches_the_package():
    labels = " ".join(dockerfile_instructions_of("LABEL"))
    assert f'org.opencontainers.image.version="{project_version()}"' in labels


def test_copied_paths_exist_and_are_in_the_build_context():
    patterns = dockerignore_patterns()
    copies = dockerfile_instructions_of("COPY") + dockerfile_instructions_of("ADD")
    assert copies
    sources = []
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        sources += words[:-1]
    assert {"pyproject.toml", "depthtune/", "experiments/"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not is_ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_local_state_out():
    patterns = dockerignore_patterns()
    for path in (
        ".git",
        ".venv",
        "mlruns",
        "mlflow.db",
        "ray_results",
        "data",
        "runs",
        "docs/sweep_dashboard.png",
        "depthtune/__pycache__",
        "__pycache__",
        "depthtune.egg-info",
        ".pytest_cache",
        ".ruff_cache",
        ".ci",
        "data/synthetic_nyu_300f_3v.mat",
    ):
        assert is_ignored(path, patterns), path
    for path in ("pyproject.toml", "README.md", "depthtune/cli.py", "depthtune/configs/net12.yaml"):
        assert not is_ignored(path, patterns), path
