#!/bin/sh
echo "coverage is not supported in the offline Debian build" >&2
exit 1
