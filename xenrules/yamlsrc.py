"""YAML loading that remembers where every value was written.

Problems are reported like netplan: `file:line:col: message`, then the source
line and a caret under the column.
"""
import yaml


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
        self.data = self._load()

    def problem(self, where, message, key=False):
        """A Problem located at a data path (the key's place if key=True)."""
        where = tuple(where)
        pos = None
        while pos is None:
            pos = (self.key_marks.get(where) if key else None) or self.marks.get(where)
            if pos is None:
                if not where:
                    pos = (1, 1)
                where = where[:-1]
        return Problem(self.path, pos[0], pos[1], message, self.text)

    def _load(self):
        loader = yaml.SafeLoader(self.text)
        try:
            node = loader.get_single_node()
            return None if node is None else self._walk(loader, node, ())
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
