"""One error model for the whole service: raised in the core, rendered once by the API."""

from __future__ import annotations


class GisError(Exception):
    """An error a user can act on: a stable code and a message in Chinese and English."""

    def __init__(self, code: str, message_zh: str, message_en: str, status: int = 400):
        super().__init__(f"{code}: {message_en}")
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en
        self.status = status

    @property
    def message(self) -> str:
        return f"{self.message_zh} / {self.message_en}"

    def body(self) -> dict:
        return {"code": self.code, "message": self.message}


class _FileKeyError(GisError):
    """A configuration file is wrong; start-up stops and names the file and key."""

    code, what_zh, what_en = "bad_file", "文件", "file"

    def __init__(self, path, key: str, problem_zh: str, problem_en: str):
        super().__init__(self.code, f"{self.what_zh} {path} 的 {key} 有误：{problem_zh}",
                         f"{self.what_en} {path}, key '{key}': {problem_en}", status=500)
        self.path = path
        self.key = key


class DefinitionError(_FileKeyError):
    """A layer definition file (or layers/groups.toml) is wrong."""

    code, what_zh, what_en = "bad_layer_definition", "图层定义文件", "layer definition"


class RuleFileError(_FileKeyError):
    """A rule file (or the local override file) is wrong."""

    code, what_zh, what_en = "bad_rule_file", "规则文件", "rule file"


def shown(value, limit: int = 40) -> str:
    """A user's value quoted in an error message, cut short: an answer never echoes a megabyte back."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def not_found(what_zh: str, what_en: str) -> GisError:
    return GisError("not_found", f"未找到{what_zh}", f"{what_en} not found", 404)


def bad_parameter(name: str, problem_zh: str, problem_en: str) -> GisError:
    return GisError("bad_parameter", f"参数 {name} 无效：{problem_zh}", f"invalid parameter '{name}': {problem_en}", 400)

