#!/usr/bin/env bash
# vendor-uplot.sh [VERSION]: re-vendor uPlot from the npm registry into static/uplot/ (the files the
# dashboard embeds): the minified IIFE build, its stylesheet and its license. `npm pack` downloads
# the published tarball; nothing is built. After changing the version, update the default VERSION
# below, VENDORED.md and the version TestVendoredUPlot checks, then run the dashboard's tests.
set -euo pipefail

VERSION=${1:-1.6.32}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest=$here/static/uplot
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "uplot@$VERSION" >/dev/null)
tar -xzf "$tmp/uplot-$VERSION.tgz" -C "$tmp"
mkdir -p "$dest"
cp "$tmp/package/dist/uPlot.iife.min.js" "$tmp/package/dist/uPlot.min.css" "$tmp/package/LICENSE" "$dest/"
printf 'vendored uplot@%s into %s\n' "$VERSION" "$dest"
(cd "$dest" && sha256sum uPlot.iife.min.js uPlot.min.css LICENSE)
