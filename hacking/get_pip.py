"""Offline stand-in for ansible-test's get-pip bootstrap script.

ansible-test bootstraps pip into each sanity/units virtualenv by downloading
get-pip-<version>.py from a host this machine cannot reach; it first looks for
~/.ansible/test/cache/get_pip_<version>.py.  `make` copies this file there.  It
installs pip from the interpreter's own ensurepip (in a subprocess: running
ensurepip in-process sets PIP_CONFIG_FILE=/dev/null, which would drop this
machine's pip settings) and then runs `pip install` with the arguments
ansible-test passes, using the machine's normal package index settings.
"""

import subprocess
import sys


def main() -> int:
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True,
                   stdout=subprocess.DEVNULL)
    args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
    return subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args],
                          check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
