#!/usr/bin/env bash
# Every relative link and {{#include}} in README.md and the book (docs/src) must name an
# existing file, and every #anchor into a chapter must exist in the built book.
# Usage: docs/check-links.sh BOOK_DIR   (run from the repository root, after mdbook build)
set -euo pipefail
book=${1:?usage: docs/check-links.sh BOOK_DIR}
checked=0
broken=0
for file in README.md docs/src/*.md; do
  dir=$(dirname "$file")
  while read -r link; do
    case "$link" in http://* | https://* | mailto:*) continue ;; esac
    path=${link%%#*}
    anchor=${link#"$path"}
    anchor=${anchor#\#}
    target=$file
    [ -n "$path" ] && target=$dir/$path
    target=${target#./}
    checked=$((checked + 1))
    if [ ! -e "$target" ]; then
      echo "broken link: $file -> $link"
      broken=$((broken + 1))
    elif [ -n "$anchor" ] && [[ $target == docs/src/*.md ]]; then
      chapter=${target#docs/src/}
      if ! grep -q "id=\"$anchor\"" "$book/${chapter%.md}.html"; then
        echo "missing anchor: $file -> $link"
        broken=$((broken + 1))
      fi
    fi
  done < <(grep -oP '\]\(\K[^)\s]+(?=\))' "$file"; grep -oP '\{\{#include \K[^}]+(?=\}\})' "$file" || true)
done
echo "links: $checked checked, $broken broken"
[ "$broken" -eq 0 ]
