"""YAML loading that remembers where every value was written.

Problems are reported like netplan: `file:line:col: message`, then the source
line and a caret under the column.
"""
import yaml

# Values a file may hold once its aliases are expanded: far more than any
# rule set needs, far less than an alias bomb would make.
MAX_VALUES = 100_000


class _Refused(Exception):
    """A file whose aliases recurse or expand beyond MAX_VALUES."""


class Problem:
    def __init__(self, file, line, col, message, text=None):
        self.file, self.line, self.col, self.message = file, line, col, message
        self.text = text   # the whole file, to quote the offending line

    def __str__(self):
        head = f"{self.file}:{self.line}:{self.col}: {self.message}"
        if not self.text or self.line < 1:
            return head
        lines = self.text.splitlines()
        if self.line > len(lines):
            return head
        src = lines[self.line - 1]
        return f"{head}\n{src}\n{' ' * (self.col - 1)}^"

    def key(self):
        return (self.file, self.line, self.col, self.message)


class Source:
    """A parsed file: its data and the position of every value and key."""

    def __init__(self, path, text):
        self.path = path
        self.text = text
        self.marks = {}      # path tuple -> (line, col) of the value
        self.key_marks = {}  # path tuple -> (line, col) of the mapping key
        self.problems = []
        self._walked = {}    # id(node) -> (value, number of values under it): aliases reuse it
        self._open = set()   # nodes being walked: meeting one again is a recursive alias
        self._count = 0
        self.data = self._load()

    def mark(self, where, key=False):
        """(line, col) of a data path. Inside a value reused through an alias
        only the alias itself has a mark, so the nearest marked parent answers."""
        where = tuple(where)
        while True:
            pos = (self.key_marks.get(where) if key else None) or self.marks.get(where)
            if pos is not None:
                return pos
            if not where:
                return (1, 1)
            where = where[:-1]

    def problem(self, where, message, key=False):
        """A Problem located at a data path (the key's place if key=True)."""
        line, col = self.mark(where, key)
        return Problem(self.path, line, col, message, self.text)

    def _load(self):
        try:
            loader = yaml.SafeLoader(self.text)   # checks every character first
        except yaml.reader.ReaderError as e:
            # a control character YAML forbids (NUL, ESC...): no mark, only an offset
            before = self.text[:e.position]
            line, col = before.count("\n") + 1, e.position - (before.rfind("\n") + 1) + 1
            char = e.character if isinstance(e.character, str) else chr(e.character)
            self.problems.append(Problem(self.path, line, col,
                                         f"YAML: character {char!r} is not allowed in a YAML file",
                                         self.text))
            return None
        try:
            node = loader.get_single_node()
            return None if node is None else self._walk(loader, node, ())
        except _Refused as e:
            mark = e.args[0].start_mark
            self.problems.append(Problem(self.path, mark.line + 1, mark.column + 1, e.args[1], self.text))
        except yaml.MarkedYAMLError as e:
            mark = e.problem_mark or e.context_mark
            msg = f"YAML: {e.problem or e.context}"
            self.problems.append(Problem(self.path, mark.line + 1, mark.column + 1, msg, self.text))
        except yaml.YAMLError as e:
            self.problems.append(Problem(self.path, 1, 1, f"YAML: {e}", self.text))
        finally:
            loader.dispose()
        return None

    def _walk(self, loader, node, where):
        self.marks[where] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if id(node) in self._walked:
            value, size = self._walked[id(node)]
            self._counted(node, size)
            return value
        if id(node) in self._open:
            raise _Refused(node, "recursive alias: a value contains itself")
        self._open.add(id(node))
        before = self._count
        value = self._build(loader, node, where)
        self._open.discard(id(node))
        self._walked[id(node)] = (value, self._count - before + 1)
        self._counted(node, 1)
        return value

    def _counted(self, node, size):
        self._count += size
        if self._count > MAX_VALUES:
            raise _Refused(node, f"more than {MAX_VALUES} values once aliases are expanded")

    def _build(self, loader, node, where):
        if isinstance(node, yaml.MappingNode):
            written = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = str(loader.construct_object(key_node, deep=True))
                if key in written:
                    pos = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                    self.problems.append(Problem(self.path, *pos, f"duplicate key {key!r}", self.text))
                written.add(key)
            loader.flatten_mapping(node)   # `<<: *anchor` merges: written keys win
            out = {}
            for key_node, value_node in node.value:
                key = str(loader.construct_object(key_node, deep=True))
                here = where + (key,)
                self.key_marks[here] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = self._walk(loader, value_node, here)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._walk(loader, item, where + (i,)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)


def read_source(path):
    with open(path, encoding="utf-8") as f:
        return Source(path, f.read())
