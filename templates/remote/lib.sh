# gpufab's shell library: the pieces more than one remote program uses.
# core/programs.py sends, with each program, the functions it calls (and those
# they call). A function starts with `name() {` and ends with a lone `}` line.
