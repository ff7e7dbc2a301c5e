"""scripts/install-chromium.sh with apt-get, sudo and id stubbed, on a PATH without chromium.

Guards the bug where `$SUDO DEBIAN_FRONTEND=noninteractive apt-get ...` ran the assignment as a
command when $SUDO was empty (root without sudo), which stopped CI on every fresh machine.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-chromium.sh"

# Each stub appends one line to $STUB_LOG: its name, DEBIAN_FRONTEND as it saw it, its arguments.
_LOG_LINE = 'echo "$(basename "$0") [DEBIAN_FRONTEND=${DEBIAN_FRONTEND:-}] $*" >> "$STUB_LOG"'
_APT_GET = f"""#!/usr/bin/env bash
{_LOG_LINE}
if [ "$1" = install ]; then  # what the real package does: a chromium on PATH
  printf '#!/usr/bin/env bash\\necho Chromium 1.0\\n' > "$STUB_BIN/chromium"
  chmod +x "$STUB_BIN/chromium"
fi
"""
_SUDO = f"""#!/usr/bin/env bash
{_LOG_LINE}
[ "$1" = -n ] || {{ echo "sudo stub: would prompt for a password" >&2; exit 1; }}
shift
exec "$@"
"""


def _stub_path(tmp_path: Path, uid: int, with_sudo: bool) -> tuple[dict[str, str], Path]:
    """A PATH holding only the stubs and the few real tools the script and stubs need."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "chmod", "basename", "true"):
        real = shutil.which(tool)
        assert real is not None, tool
        (bin_dir / tool).symlink_to(real)
    stubs = {"apt-get": _APT_GET, "id": f'#!/usr/bin/env bash\necho "{uid}"\n'}
    if with_sudo:
        stubs["sudo"] = _SUDO
    for name, text in stubs.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    # TACQ_CHROMIUM: where the script looks besides PATH (here: where the fake install goes,
    # so this machine's own /usr/bin/chromium does not count)
    env = {
        "PATH": str(bin_dir),
        "STUB_LOG": str(log),
        "STUB_BIN": str(bin_dir),
        "TACQ_CHROMIUM": str(bin_dir / "chromium"),
    }
    return env, log


def _run(env: dict[str, str]) -> subprocess.CompletedProcess:
    bash = shutil.which("bash")
    return subprocess.run(
        [bash, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def _calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_as_root_without_sudo_runs_apt_get_directly(tmp_path):
    env, log = _stub_path(tmp_path, uid=0, with_sudo=False)
    assert shutil.which("chromium", path=env["PATH"]) is None

    done = _run(env)

    assert done.returncode == 0, done.stderr
    assert _calls(log) == [
        "apt-get [DEBIAN_FRONTEND=] update -qq",
        "apt-get [DEBIAN_FRONTEND=noninteractive] install -y -qq chromium",
    ]


def test_as_user_with_sudo_goes_through_sudo_n(tmp_path):
    env, log = _stub_path(tmp_path, uid=1000, with_sudo=True)

    done = _run(env)

    assert done.returncode == 0, done.stderr
    assert _calls(log) == [
        "sudo [DEBIAN_FRONTEND=] -n true",
        "sudo [DEBIAN_FRONTEND=] -n apt-get update -qq",
        "apt-get [DEBIAN_FRONTEND=] update -qq",
        "sudo [DEBIAN_FRONTEND=] -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium",
        "apt-get [DEBIAN_FRONTEND=noninteractive] install -y -qq chromium",
    ]


def test_without_root_or_sudo_says_what_to_install_in_one_line(tmp_path):
    env, log = _stub_path(tmp_path, uid=1000, with_sudo=False)

    done = _run(env)

    assert done.returncode == 1
    assert _calls(log) == []  # never tried apt-get as a plain user
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "apt-get install chromium" in lines[0], done.stderr


def test_present_chromium_installs_nothing(tmp_path):
    env, log = _stub_path(tmp_path, uid=0, with_sudo=False)
    fake = Path(env["STUB_BIN"]) / "chromium"
    fake.write_text("#!/usr/bin/env bash\necho Chromium 1.0\n")
    fake.chmod(0o755)

    done = _run(env)

    assert done.returncode == 0 and _calls(log) == []


def test_ci_and_readme_share_the_one_install_script():
    root = SCRIPT.parent.parent
    ci = (root / ".ci" / "run").read_text()
    test_sh = (root / "scripts" / "test.sh").read_text()
    assert "scripts/test.sh" in ci and "apt-get" not in ci
    assert "scripts/install-chromium.sh" in test_sh and "apt-get install" not in test_sh


def test_chromium_off_path_at_its_debian_location_counts(tmp_path):
    """A caller whose PATH lacks /usr/bin: the installed binary is found where the tests
    launch it, rather than failing with 'apt-get put no chromium on PATH'."""
    env, log = _stub_path(tmp_path, uid=0, with_sudo=False)
    outside = tmp_path / "usr-bin"
    outside.mkdir()
    (outside / "chromium").write_text("#!/usr/bin/env bash\necho Chromium 1.0\n")
    (outside / "chromium").chmod(0o755)
    env["TACQ_CHROMIUM"] = str(outside / "chromium")

    done = _run(env)

    assert done.returncode == 0 and _calls(log) == []


_APT_GET_LISTED_BUT_GONE = f"""#!/usr/bin/env bash
{_LOG_LINE}
if [[ " $* " == *" --reinstall "* ]]; then  # only a reinstall puts the files back
  printf '#!/usr/bin/env bash\\necho Chromium 1.0\\n' > "$STUB_BIN/chromium"
  chmod +x "$STUB_BIN/chromium"
fi
"""


def test_a_package_listed_as_installed_without_its_binary_is_reinstalled(tmp_path):
    """An image that deleted chromium's files but not its dpkg record: install is a no-op
    that succeeds, so the script reinstalls instead of failing CI."""
    env, log = _stub_path(tmp_path, uid=0, with_sudo=False)
    (Path(env["STUB_BIN"]) / "apt-get").write_text(_APT_GET_LISTED_BUT_GONE)

    done = _run(env)

    assert done.returncode == 0, done.stderr
    assert _calls(log) == [
        "apt-get [DEBIAN_FRONTEND=] update -qq",
        "apt-get [DEBIAN_FRONTEND=noninteractive] install -y -qq chromium",
        "apt-get [DEBIAN_FRONTEND=noninteractive] install -y -qq --reinstall chromium",
    ]
