# Checks a raw --progress=tty transcript captured with script(1): nothing is
# drawn after the summary line, and colour is used unless NO_COLOR is set.
import sys
raw = open(sys.argv[1], "rb").read().decode("utf-8", "replace")
tail = raw[raw.rfind("FINISHED"):]
print("ends with the summary:", tail.startswith("FINISHED, ") and tail.endswith("cached\r\n"))
print("escape sequences after the summary:", "\x1b" in tail)
print("a running step's output was shown:", "line 2" in raw)
print("colour used:", "\x1b[32m" in raw or "\x1b[34m" in raw)
