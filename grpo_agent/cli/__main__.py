"""``python -m grpo_agent.cli``: the ``grpo-chess`` command."""

from grpo_agent.cli import main

raise SystemExit(main())
