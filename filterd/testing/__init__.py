"""filterd.testing: run plugins through the real chain runner, without any server.

```python
from filterd.testing import run_plugin
result = await run_plugin(MyPlugin, {"threshold": 5}, message=raw_bytes,
                          mail_from="a@example.com", rcpts=["b@example.org"])
assert result.verdict("on_message") == Continue()
assert b"X-Checked: yes" in result.message
```
"""

from filterd.testing.harness import ScanResult, load_message, run_chain, run_plugin

__all__ = ["ScanResult", "load_message", "run_chain", "run_plugin"]
