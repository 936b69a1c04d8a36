#!/usr/bin/env bash
# The paper's experiments in the simulator: Llama-3.1-8B on A100-80GB (roofline), the four
# workloads at full scale. Results under benchmarks/results/sim/ (one folder per
# experiment: summary.md with the tables and the simulation speed, latency.png, results.json,
# summary.csv).
#
#   benchmarks/sim_paper.sh [mixed|plas|chatbot|react|lats|balance|scale|sensitivity]...
#   (default: all of them, one after another; they are independent, so two shells can
#   share the list)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sim=(.venv/bin/autellix simulate)
out=benchmarks/results/sim
variants=("vllm=fcfs:--no-prefix-caching --no-chunked-prefill" "vllm-opt=fcfs:--schedule-every 8 --no-kv-retention"
    mlfq atlas srpt)

# latency vs arrival rate, baselines vs Autellix, SRPT as the clairvoyant bound
mixed() {
    "${sim[@]}" mixed --programs 400 --rates 0.5 1 2 4 --policies "${variants[@]}" \
        --out $out/mixed
}
plas() {  # PLAS (charged every call's service) against ATLAS (charged the critical path)
    "${sim[@]}" mixed --programs 400 --rates 0.5 1 2 4 --out $out/mixed-plas \
        --policies "vllm=fcfs:--no-prefix-caching --no-chunked-prefill" plas atlas
    "${sim[@]}" lats --programs 150 --rates 0.1 0.2 0.4 0.8 --policies plas atlas \
        --baseline atlas --out $out/lats-plas
}
chatbot() {
    "${sim[@]}" chatbot --programs 400 --rates 2 4 8 16 --policies "${variants[@]}" \
        --out $out/chatbot
}
react() {
    "${sim[@]}" react --programs 400 --rates 1 2 4 8 --policies "${variants[@]}" \
        --out $out/react
}
lats() {
    "${sim[@]}" lats --programs 150 --rates 0.1 0.2 0.4 0.8 --policies "${variants[@]}" \
        --out $out/lats
}

balance() {  # 4 replicas, Autellix's policy, each balancer
    for b in locality round-robin least-used cache-aware; do
        "${sim[@]}" chatbot --replicas 4 --balancer "$b" --programs 800 --rates 16 32 \
            --policies "$b=atlas" --out $out/balance-chatbot-$b
        "${sim[@]}" lats --replicas 4 --balancer "$b" --programs 300 --rates 0.8 1.6 \
            --policies "$b=atlas" --out $out/balance-lats-$b
    done
}

scale() {  # 1-8 replicas at the same load per replica
    for n in 1 2 4 8; do
        "${sim[@]}" mixed --replicas "$n" --programs $((200 * n)) --rates $((2 * n)) \
            --policies "vllm=fcfs:--no-prefix-caching --no-chunked-prefill" atlas \
            --out $out/scale-$n
    done
}

sensitivity() {  # Autellix's knobs, one at a time, on mixed past the baselines' knees
    "${sim[@]}" mixed --programs 400 --rates 2 --baseline K11 --out $out/sensitivity \
        --policies K1=atlas:"--num-queues 1" K3=atlas:"--num-queues 3" K11=atlas \
        K16=atlas:"--num-queues 16" Q0.25=atlas:"--first-boundary 0.25" \
        Q4=atlas:"--first-boundary 4" beta2=atlas:"--beta 2" beta-off=atlas:"--beta 1e9" \
        step8=atlas:"--schedule-every 8" evict=atlas:"--evict-preempted" \
        mlfq mlfq-evict=mlfq:"--evict-preempted"
}

for experiment in "${@:-mixed plas chatbot react lats balance scale sensitivity}"; do
    for e in $experiment; do $e; done
done
