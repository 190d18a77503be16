int dir_placeholder(void); int dir_placeholder(void) { return 0; }
