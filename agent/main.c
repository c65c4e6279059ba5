/* main.c - dagy-agent entry point (placeholder until the agent lands). */
int main(void)
{
    return 0;
}
