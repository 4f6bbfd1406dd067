#!/usr/bin/env bash
# Put hacking/get_pip.py where ansible-test looks for its pip bootstrap script,
# for the pip version that the given virtualenv's ansible-test pins.
set -euo pipefail
venv=$1
here=$(cd "$(dirname "$0")" && pwd)
req=$(ls "$venv"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py)
version=$(sed -n "s/^ *pip='\([0-9.]*\)',.*/\1/p" "$req" | head -n1)
[ -n "$version" ] || { echo "cannot find ansible-test's pip version in $req" >&2; exit 1; }
mkdir -p "$HOME/.ansible/test/cache"
cp "$here/get_pip.py" "$HOME/.ansible/test/cache/get_pip_${version//./_}.py"
