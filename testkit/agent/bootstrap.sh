#!/bin/sh
# The launcher Berth makes a sandbox's entrypoint when runtime.execd_image is set: it starts the
# agent named by $EXECD in the background (unquoted, as upstream's does, so the variable may
# carry arguments), then becomes the sandbox's own entrypoint, its arguments, so that program is
# the container's main process and gets the runtime's signals directly. Without arguments, a
# shell.
if [ -n "${EXECD:-}" ]; then
	$EXECD &
fi
if [ "$#" -eq 0 ]; then
	exec sh
fi
exec "$@"
