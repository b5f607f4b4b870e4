"""TeleCoder's own agent: a tool-calling loop on any OpenAI-compatible or Ollama model.

It runs as a process of its own (``python -m telecoder.agent``), started by the ``builtin``
engine inside the session's runtime, so the sandbox confines it as it confines any agent CLI;
its path checks are a second wall, not the only one. It imports nothing of TeleCoder's but this
package (the standard library and httpx only).

- ``tools``: the five tools (``read_file``, ``write_file``, ``list_directory``, ``run_command``,
  ``search_files``), every path confined to the worktree, each result a typed observation;
  beside it ``specs`` (each tool's description and parameters: the schemas offered and the check
  of a call's arguments), ``command`` (one shell command in its own process group, killed on
  timeout, output capped) and ``search`` (the bounded search of text files);
- ``parse``: a model reply to tool calls — native ``tool_calls``, JSON in the content, or XML —
  or a ``FormatError`` whose message is the correction sent back to the model;
- ``model``: the chat client (OpenAI Chat Completions, or Ollama's native ``/api/chat``);
- ``loop``: the ReAct loop and its guardrails; ``__main__``: the command line and the events it
  prints (one JSON object a line) for the engine's parser.
"""
