int pr_admin_placeholder(void);
int pr_admin_placeholder(void) { return 0; }
