"""A terminal screen, just enough of one: what the tests and docs/gen_transcripts.py read of the
wizard's questions when they drive it in a pseudo-terminal."""

from __future__ import annotations

import re

CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])|([^\x1b])|\x1b.?", re.S)


class Screen:
    """Just enough of a terminal to read what prompt_toolkit draws: text, backspace, cursor moves,
    erasing (it redraws only what changed). Lines grow as long as they are written: nothing wraps."""

    def __init__(self) -> None:
        self.lines: list[list[str]] = [[]]
        self.row = self.col = 0

    def _line(self) -> list[str]:
        while len(self.lines) <= self.row:
            self.lines.append([])
        line = self.lines[self.row]
        while len(line) < self.col:
            line.append(" ")
        return line

    def feed(self, text: str) -> None:
        for m in CSI.finditer(text):
            args, cmd, char = m.group(1), m.group(2), m.group(3)
            if char is not None:
                if char == "\r":
                    self.col = 0
                elif char == "\n":
                    self.row += 1
                elif char == "\b":
                    self.col = max(0, self.col - 1)
                elif char >= " ":
                    line = self._line()
                    if self.col < len(line):
                        line[self.col] = char
                    else:
                        line.append(char)
                    self.col += 1
                continue
            if cmd is None or (args or "").startswith("?"):
                continue
            n = int(args) if args and args.isdigit() else 1
            if cmd == "A":
                self.row = max(0, self.row - n)
            elif cmd == "B":
                self.row += n
            elif cmd == "C":
                self.col += n
            elif cmd == "D":
                self.col = max(0, self.col - n)
            elif cmd == "G":
                self.col = max(0, n - 1)
            elif cmd == "K":
                del self._line()[self.col:]
            elif cmd == "J":
                del self._line()[self.col:]
                del self.lines[self.row + 1:]

    def text(self, start: int = 0) -> str:
        rows = ["".join(line).rstrip() for line in self.lines[start:]]
        while rows and not rows[-1]:
            rows.pop()
        return "\n".join(rows)
