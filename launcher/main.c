/* main.c - dagy-launch entry point (placeholder until the launcher lands). */
int main(void)
{
    return 0;
}
