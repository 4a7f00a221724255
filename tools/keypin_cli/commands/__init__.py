"""The subcommands by family: keys (pin, keygen, csr), pinsets (pinset, signer), boards (image,
deploy, provision, status, flash), server (check, certbot-hook, reports). Each module holds its
``cmd_*`` functions and their argparse setup (``args_*``); ``cli.COMMANDS`` is the one table."""
