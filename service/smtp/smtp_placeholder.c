int smtp_placeholder(void); int smtp_placeholder(void) { return 0; }
