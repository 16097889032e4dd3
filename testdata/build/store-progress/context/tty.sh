# tty.sh COMMAND: runs COMMAND in a 200x40 tmux pane and prints what the
# terminal finally shows (scrollback included), times and digests replaced.
# A socket per call: a server told to exit by the previous call may still
# hold the shared one ("server exited unexpectedly").
sock=$OUT/tmux-$$.sock
tmux -S "$sock" new-session -d -x 200 -y 40 "$1; tmux -S $sock wait-for -S done; sleep 60"
tmux -S "$sock" wait-for done
tmux -S "$sock" capture-pane -p -J -S - | sed -E 's/ +$//; s/@sha256:[0-9a-f]{64}//; s/sha256:[0-9a-f]{64}/<id>/; s/[0-9]+\.[0-9]s/<t>/g' | grep -v '^$'
tmux -S "$sock" kill-server
