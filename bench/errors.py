"""The one exception type a user sees as a plain message instead of a traceback."""


class SegbenchError(Exception):
    """Bad input (a file, a config key, a method name) described for the user.

    The message must name the file or key and say what is wrong with it. The CLI prints it as
    ``error: <message>`` and exits with status 2; nothing already written is touched.
    """
