#!/usr/bin/env python3
"""Writes a copy of a proto3 file that protoc-c 1.4 accepts.

protoc-c before 1.5 refuses proto3 `optional` fields ("code generator --c_out
hasn't been updated to support optional fields in proto3"). A proto3
optional field is, by definition, a field alone in a synthetic oneof, and
its wire format is that of a oneof member: sent when set (even when empty),
absent otherwise. So each `optional TYPE NAME = N;` is rewritten to
`oneof _NAME { TYPE NAME = N; }`, the oneof protoc itself makes of it, and
the C code then reads and writes exactly the bytes other implementations of
the original .proto do. Nothing else changes: package, messages, names and
numbers are kept.

Any other use of `optional` (a form this rewrite does not know) is an
error, so the build fails loudly rather than generating a wrong schema.

Usage: protoc_c_compat.py INPUT.proto OUTPUT.proto
"""

import re
import sys

FIELD = re.compile(
    r"^(?P<indent>\s*)optional\s+(?P<type>[A-Za-z_][\w.]*)\s+"
    r"(?P<name>[A-Za-z_]\w*)\s*=\s*(?P<number>\d+)\s*;(?P<rest>.*)$"
)


def strip_comment(line: str) -> str:
    # the .proto files hold no string literal with "//" in it
    return line.split("//", 1)[0]


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, encoding="utf-8") as f:
        lines = f.read().split("\n")
    out = []
    for lineno, line in enumerate(lines, 1):
        m = FIELD.match(line)
        if m:
            line = "{indent}oneof _{name} {{ {type} {name} = {number}; }}{rest}".format(
                **m.groupdict()
            )
        elif re.search(r"\boptional\b", strip_comment(line)):
            print(f"{src}:{lineno}: unsupported use of 'optional'", file=sys.stderr)
            return 1
        out.append(line)
    with open(dst, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
