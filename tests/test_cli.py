"""The command line's contract: help works, user mistakes exit 2 with one sentence."""


def test_module_help_lists_usage(diffkit_cli):
    result = diffkit_cli("--help")
    assert result.returncode == 0
    assert "usage: diffkit" in result.stdout
