#!/usr/bin/env bash
# Every metric that deploy/k8s/monitoring.yaml alerts on is one the daemons
# export, as README.md's metrics tables document them: a renamed metric
# must not leave an alert that can never fire.
set -euo pipefail
rules=${1:?usage: $0 monitoring.yaml README.md}
readme=${2:?usage: $0 monitoring.yaml README.md}
documented=$(grep -o 'strait_[a-z0-9_]*' "$readme" | sort -u)
used=$(grep -o 'strait_[a-z0-9_]*' "$rules" | sort -u)
[[ -n $used ]] || { echo "FAIL: no metric found in $rules"; exit 1; }
missing=0
for m in $used; do
  if ! grep -qx "$m" <<<"$documented"; then
    echo "FAIL: $rules uses $m, which README.md does not document"
    missing=1
  fi
done
((missing == 0)) && echo "PASS: $(wc -w <<<"$used") metrics in the alert rules, all documented"
exit "$missing"
