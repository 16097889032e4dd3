#!/bin/sh
# Commits everything in the repository REPO with a fixed author, committer
# and date (so commit ids are the same on every run), creating REPO (branch
# main) if needed. Usage: git-commit.sh REPO MESSAGE [SECONDS-AFTER-EPOCH]
set -eu
repo=$1 msg=$2 t=$((1600000000 + ${3:-0}))
export GIT_AUTHOR_NAME=kiln GIT_AUTHOR_EMAIL=kiln@example.com
export GIT_COMMITTER_NAME=kiln GIT_COMMITTER_EMAIL=kiln@example.com
export GIT_AUTHOR_DATE="@$t +0000" GIT_COMMITTER_DATE="@$t +0000"
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
[ -d "$repo/.git" ] || git init -q -b main "$repo"
git -C "$repo" add -A
git -C "$repo" commit -q -m "$msg"
git -C "$repo" rev-parse HEAD
