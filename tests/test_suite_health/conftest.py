"""The health fixture's own tests run whole pytest sessions; pytester does that. Enabled
here, in a directory pytest loads at start-up (its name starts with "test"), so only runs
that include these tests load the plugin."""

pytest_plugins = ["pytester"]
