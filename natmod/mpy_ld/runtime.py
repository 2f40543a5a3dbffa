"""Facts about the MicroPython runtime, read from its sources (py/ of a MicroPython tree).

Reading them instead of writing them down keeps the linker honest when the sources move on:
the numbering of the firmware's static qstrs and the layout of mp_fun_table are what a native
module is compiled and linked against.
"""

import ast
import re
from pathlib import Path

# .mpy version this linker writes (py/persistentcode.h: MPY_VERSION, MPY_SUB_VERSION).
MPY_VERSION = 6
MPY_SUB_VERSION = 3

# The first mp_fun_table entry that holds a pointer to a firmware object (a type or a stream
# method) rather than a function: a module may take such an object's address as a plain symbol,
# and the loader resolves it through that entry (py/nativeglue.h, "start at index 73").
FIRST_OBJECT_ENTRY = "type_type"


def static_qstrs(mpy_dir):
    """The qstrs every firmware has at fixed numbers: {name: number}.

    py/makeqstrdata.py's `static_qstr_list` is emitted first, after MP_QSTRnull (0), so entry i
    is qstr i + 1; the loader treats numbers up to MP_QSTR_zip as static (persistentcode.c,
    QSTR_LAST_STATIC). Only names that are C identifiers can be written as MP_QSTR_name.
    """
    tree = ast.parse(Path(mpy_dir, "py", "makeqstrdata.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "static_qstr_list":
            names = ast.literal_eval(node.value)
            break
    else:
        raise RuntimeError("static_qstr_list not found in py/makeqstrdata.py")
    if names[-1] != "zip":
        raise RuntimeError("py/makeqstrdata.py: static qstrs no longer end at 'zip' (QSTR_LAST_STATIC)")
    return {q: i + 1 for i, q in enumerate(names) if re.fullmatch(r"[A-Za-z_]\w*", q)}


def fun_table_objects(mpy_dir):
    """Symbols resolved through an mp_fun_table entry: {"mp_type_type": 73, ...}.

    Counts the fields of `struct _mp_fun_table_t` in py/nativeglue.h (one `;` per field once
    comments and preprocessor lines are gone); from FIRST_OBJECT_ENTRY on, field `x` holds the
    address of the firmware's `mp_x`.
    """
    text = Path(mpy_dir, "py", "nativeglue.h").read_text()
    body = re.search(r"typedef struct _mp_fun_table_t \{(.*?)\} mp_fun_table_t;", text, re.S).group(1)
    body = re.sub(r"/\*.*?\*/|//[^\n]*", "", body, flags=re.S)
    body = "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("#"))
    fields = []
    for decl in body.split(";")[:-1]:
        m = re.search(r"\(\s*\*\s*(\w+)\s*\)", decl) or re.search(r"(\w+)\s*$", decl)
        fields.append(m.group(1))
    first = fields.index(FIRST_OBJECT_ENTRY)
    return {"mp_" + f: i for i, f in enumerate(fields) if i >= first}
