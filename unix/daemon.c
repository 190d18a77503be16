int pr_unix_placeholder(void);
int pr_unix_placeholder(void) { return 0; }
