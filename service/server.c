/* placeholder replaced by the server module */
int pr_server_placeholder(void);
int pr_server_placeholder(void) { return 0; }
