#!/usr/bin/env bash
# Makes testdata/sbom/{go,rust}/tree/usr/local/bin/hello-* again (see README.md).
# Needs go (Debian's golang-go), cargo-auditable (cargo install cargo-auditable)
# and objcopy (binutils).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/go" "$work/rs/src"
cat > "$work/go/main.go" <<'GO'
package main

import "fmt"

func main() { fmt.Println("hello from go") }
GO
printf 'module example.com/kiln/hello\n\ngo 1.19\n' > "$work/go/go.mod"
(cd "$work/go" && GOPROXY=off CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o hello .)
objcopy --only-section=.go.buildinfo "$work/go/hello" "$here/go/tree/usr/local/bin/hello-go"
cat > "$work/rs/Cargo.toml" <<'TOML'
[package]
name = "kiln-auditable-hello"
version = "0.1.0"
edition = "2024"

[dependencies]
itoa = "=1.0.19"
TOML
cat > "$work/rs/src/main.rs" <<'RS'
fn main() {
    let mut b = itoa::Buffer::new();
    println!("hello from rust {}", b.format(42));
}
RS
(cd "$work/rs" && cargo auditable build --release -q)
objcopy --only-section=.dep-v0 "$work/rs/target/release/kiln-auditable-hello" "$here/rust/tree/usr/local/bin/hello-rust"
