# The Go test's repositories: "submod" (served at $SUBHTTP) and "repo", a
# submodule of it at submod/, branches base, feature, master, tags v0.0.1,
# v0.0.2, latest.
set -e
export GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1
# the submodule is fetched over HTTP (git's file:// transport is not involved)
mkdir submod && cd submod
git init -q
git config --local user.email test && git config --local user.name test
echo 123 >file && git add file && git commit -q -m initial
git update-server-info
cd .. && mkdir repo && cd repo
git init -q
git config --local user.email test && git config --local user.name test
echo base >foo
cp ../Dockerfile.repo Dockerfile
git submodule -q add http://$SUBHTTP/.git submod
git add Dockerfile foo submod
git commit -q -m initial
git tag v0.0.1
git branch base
echo feature >foo
mkdir sub
echo subfeature >sub/foo
cp Dockerfile sub/
git add foo sub
git commit -q -m feature
git branch feature
git checkout -q -B master base
echo v0.0.2 >foo
git add foo
git commit -q -m v0.0.2
git tag v0.0.2
echo latest >foo
git add foo
git commit -q -m latest
git tag latest
git update-server-info
