# Sourced by the lab scripts: the bench's arguments for one agent given on a command line.
#
#   agent_args AGENT INDEX DIR USER
#
# AGENT is a pasta binary, a slirp4netns binary (its name starts so), or `bare` (the lab with
# no agent). Sets `args` (the bench's options naming the agent, run as USER) and `label` (how
# the results call it: `bare`, `slirp4netns`, or `pasta-INDEX`). A pasta binary is copied to
# DIR/pasta-INDEX first: named so that it runs as pasta (the name picks the mode), and
# readable by USER wherever it was built.
agent_args() {
    local agent="$1" index="$2" dir="$3" user="$4"
    if [ "$agent" = bare ]; then
        args=(--bare)
        label=bare
    elif [[ "$(basename "$agent")" == slirp4netns* ]]; then
        args=(--slirp4netns "$agent" --user "$user")
        label=slirp4netns
    else
        cp "$agent" "$dir/pasta-$index"
        chmod a+rx "$dir/pasta-$index"
        args=(--pasta "$dir/pasta-$index" --user "$user")
        label="pasta-$index"
    fi
}
